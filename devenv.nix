# `devenv up` runs the same processes as `bin/up`, through the same justfile recipes (the solo
# stack; `bin/up --payout-epoch` and `bin/up --proxy` are the other shapes).
{ pkgs, ... }:

{
  packages = [
    pkgs.just
    pkgs.protobuf
    pkgs.cmake
    pkgs.boost
    pkgs.libevent
    pkgs.pkg-config
    pkgs.redis
    pkgs.cargo-nextest
  ];

  languages.rust.enable = true;

  processes = {
    redis.exec = "just run-redis";
    bitcoind.exec = "just run-bitcoind";
    pool.exec = "just run-pool";
    mint.exec = "just run-mint";
    translator.exec = "just run-translator";
    wallet.exec = "just run-wallet";
    mining-device.exec = "just run-mining-device";
  };

  enterShell = ''
    just --list
  '';
}
