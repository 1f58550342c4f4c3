//! The client against a scripted pool: stratum-apps' Noise responder with the regtest authority
//! key, answering what each test needs.

use hashpool_sv2_client::{
    ChannelRefused, ClientError, Device, PoolConnection, REQUIRES_STANDARD_JOBS, SV2_VERSION,
};
use stratum_apps::key_utils::{Secp256k1PublicKey, Secp256k1SecretKey};
use stratum_apps::network_helpers::accept_noise_connection;
use stratum_apps::network_helpers::noise_stream::{NoiseTcpReadHalf, NoiseTcpWriteHalf};
use stratum_apps::stratum_core::common_messages_sv2::{
    SetupConnectionErrorOwned, SetupConnectionSuccess,
};
use stratum_apps::stratum_core::framing_sv2::framing::MessageFrame;
use stratum_apps::stratum_core::mining_sv2::OpenMiningChannelErrorOwned;
use stratum_apps::stratum_core::parsers_sv2::{
    AnyMessage, AnyMessageOwned, CommonMessages, CommonMessagesOwned, Mining, MiningOwned,
};
use tokio::net::TcpListener;

const SECRET_KEY: &str = "qLGnngZYWnExemVFxzhhuEFLKm568mEPoELMayLiUK3ooJhRP";
const PUBLIC_KEY: &str = "9cGwoULotsUiHExSTdxxGfQXhx1aRdk4GTC2YX2ZkdYUKxjZ31W";
const TEST: Device = Device {
    vendor: "test",
    hardware_version: "",
    firmware: "",
};

/// The pool's side of the connection.
struct Peer {
    reader: NoiseTcpReadHalf,
    writer: NoiseTcpWriteHalf,
}

/// A pool that accepts one connection and hands it to `script`.
async fn pool<F, Fut>(script: F) -> String
where
    F: FnOnce(Peer) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let noise = accept_noise_connection(
            tcp,
            PUBLIC_KEY.parse().unwrap(),
            SECRET_KEY.parse().unwrap(),
            3600,
        )
        .await;
        if let Ok(noise) = noise {
            let (reader, writer) = noise.into_split();
            script(Peer { reader, writer }).await;
        }
    });
    address
}

async fn read(stream: &mut Peer) -> AnyMessageOwned {
    let mut frame = stream.reader.read_frame().await.unwrap();
    let header = frame.header();
    match AnyMessage::try_from((header, frame.payload())).unwrap() {
        AnyMessage::Common(common) => AnyMessageOwned::Common(CommonMessages::into_owned(common)),
        AnyMessage::Mining(mining) => AnyMessageOwned::Mining(Mining::into_owned(mining)),
        other => panic!("unexpected {other}"),
    }
}

async fn write(stream: &mut Peer, message: AnyMessageOwned) {
    let frame: MessageFrame<AnyMessageOwned> = message.try_into().unwrap();
    stream.writer.write_frame(frame).await.unwrap();
}

fn setup_success(flags: u32) -> AnyMessageOwned {
    AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionSuccess(
        SetupConnectionSuccess {
            used_version: SV2_VERSION,
            flags,
        },
    ))
}

fn authority() -> Option<Secp256k1PublicKey> {
    Some(PUBLIC_KEY.parse().unwrap())
}

#[tokio::test]
async fn setup_sends_the_flags_and_returns_the_pools() {
    let address = pool(|mut stream| async move {
        let AnyMessageOwned::Common(CommonMessagesOwned::SetupConnection(setup)) =
            read(&mut stream).await
        else {
            panic!("SetupConnection first");
        };
        assert_eq!(setup.flags, REQUIRES_STANDARD_JOBS);
        assert_eq!(
            (setup.min_version, setup.max_version),
            (SV2_VERSION, SV2_VERSION)
        );
        assert_eq!(setup.vendor.as_utf8_or_hex(), "test");
        write(&mut stream, setup_success(0b10)).await;
    })
    .await;
    let mut connection = PoolConnection::connect(&address, authority())
        .await
        .unwrap();
    assert_eq!(
        connection
            .setup(REQUIRES_STANDARD_JOBS, &TEST)
            .await
            .unwrap(),
        0b10
    );
}

#[tokio::test]
async fn refusals_are_typed() {
    let address = pool(|mut stream| async move {
        read(&mut stream).await;
        let refused = SetupConnectionErrorOwned {
            flags: 0,
            error_code: "unsupported-feature-flags".to_owned().try_into().unwrap(),
        };
        write(
            &mut stream,
            AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionError(refused)),
        )
        .await;
        read(&mut stream).await;
        let refused = OpenMiningChannelErrorOwned {
            request_id: 7,
            error_code: "unknown-user".to_owned().try_into().unwrap(),
        };
        write(
            &mut stream,
            AnyMessageOwned::Mining(MiningOwned::OpenMiningChannelError(refused)),
        )
        .await;
        // Then the pool hangs up.
    })
    .await;
    let mut connection = PoolConnection::connect(&address, authority())
        .await
        .unwrap();
    match connection.setup(REQUIRES_STANDARD_JOBS, &TEST).await {
        Err(ClientError::SetupRefused { code }) => assert_eq!(code, "unsupported-feature-flags"),
        other => panic!("expected SetupRefused, got {other:?}"),
    }
    let refused = connection.open_standard(7, "alice", 1.0).await.unwrap();
    assert_eq!(
        refused.unwrap_err(),
        ChannelRefused {
            request_id: 7,
            code: "unknown-user".into()
        }
    );
    assert!(matches!(connection.recv().await, Err(ClientError::Closed)));
}

#[tokio::test]
async fn the_pools_certificate_must_be_signed_by_the_authority_key() {
    let address = pool(|_| async {}).await;
    let other_key = Secp256k1PublicKey::from(Secp256k1SecretKey(
        secp256k1::SecretKey::from_slice(&[7; 32]).unwrap(),
    ));
    let result = PoolConnection::connect(&address, Some(other_key)).await;
    assert!(matches!(result, Err(ClientError::Handshake(_))));
}

#[tokio::test]
async fn nobody_listening_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    let result = PoolConnection::connect(&address, authority()).await;
    assert!(matches!(result, Err(ClientError::Connect { .. })));
}

#[tokio::test]
async fn spawned_messages_end_with_the_connection() {
    let address = pool(|mut stream| async move {
        write(&mut stream, setup_success(0)).await;
    })
    .await;
    let (reader, _writer) = PoolConnection::connect(&address, authority())
        .await
        .unwrap()
        .into_split();
    let mut messages = reader.spawn(4);
    assert!(matches!(
        messages.recv().await,
        Ok(AnyMessageOwned::Common(
            CommonMessagesOwned::SetupConnectionSuccess(_)
        ))
    ));
    assert!(matches!(messages.recv().await, Err(ClientError::Closed)));
    assert!(matches!(messages.recv().await, Err(ClientError::Closed)));
}
