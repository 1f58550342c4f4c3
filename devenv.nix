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

  # Each process through its recipe, started again (after a pause) whenever it exits, as
  # `bin/stack` does: a crashed mint does not take the pool down with it.
  processes =
    let
      supervised = name: {
        exec = "just run-${name}";
        process-compose.availability = {
          restart = "always";
          backoff_seconds = 1;
        };
      };
    in
    {
      redis = supervised "redis";
      bitcoind = supervised "bitcoind";
      pool = supervised "pool";
      mint = supervised "mint";
      translator = supervised "translator";
      wallet = supervised "wallet";
      mining-device = supervised "mining-device";
    };

  enterShell = ''
    just --list
  '';
}
