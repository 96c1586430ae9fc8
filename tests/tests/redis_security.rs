//! Redis with an ACL user and password, and Redis over TLS with
//! certificates made here: the right credentials and a trusted certificate
//! connect; a wrong password or an untrusted certificate is a clear error
//! at connect, not a hang.

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use switchboard_core::{Error, HubLifetimeManager};
use switchboard_redis::{RedisHubLifetimeManager, RedisOptions};
use switchboard_tests::redis_process::RedisProcess;
use switchboard_tests::{TestClient, init_logging, message};

/// Connect attempts must end well within this.
const CONNECT_BOUND: Duration = Duration::from_secs(6);

async fn connect(options: RedisOptions) -> (Result<RedisHubLifetimeManager, Error>, Duration) {
    let started = Instant::now();
    let result =
        RedisHubLifetimeManager::connect(options.connect_timeout(Duration::from_secs(3))).await;
    (result, started.elapsed())
}

/// Two managers on the same options exchange a message.
async fn assert_backplane_works(options: RedisOptions) {
    let s1: Arc<dyn HubLifetimeManager> = Arc::new(
        RedisHubLifetimeManager::connect(options.clone())
            .await
            .unwrap(),
    );
    let s2: Arc<dyn HubLifetimeManager> =
        Arc::new(RedisHubLifetimeManager::connect(options).await.unwrap());
    let mut client = TestClient::connect(&s2).await;
    s1.send_all(&message("m", ("secured",))).await.unwrap();
    assert!(
        client
            .recv_marked("secured", Duration::from_secs(5))
            .await
            .is_some()
    );
}

/// A Redis whose only user is `switchboard` with `password` (the default
/// user is off).
fn acl_redis(password: &str) -> RedisProcess {
    let password = format!(">{password}");
    RedisProcess::start_with(
        [
            "--user",
            "default",
            "off",
            "--user",
            "switchboard",
            "on",
            &password,
            "~*",
            "&*",
            "+@all",
        ]
        .map(String::from)
        .to_vec(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_user_and_password() {
    init_logging();
    let redis = acl_redis("s3cret");
    let port = redis.port();

    assert_backplane_works(
        RedisOptions::new(format!("redis://switchboard:s3cret@127.0.0.1:{port}")).hub("acl"),
    )
    .await;

    let (wrong, took) = connect(RedisOptions::new(format!(
        "redis://switchboard:wrong@127.0.0.1:{port}"
    )))
    .await;
    assert!(took < CONNECT_BOUND, "took {took:?}");
    match wrong {
        Err(e @ Error::BackplaneUnavailable { .. }) => {
            let text = e.to_string();
            assert!(text.contains("cannot connect to Redis"), "{text}");
            assert!(
                text.to_lowercase().contains("pass") || text.contains("WRONGPASS"),
                "{text}"
            );
        }
        other => panic!("expected a clear error, got {other:?}"),
    }

    let (anonymous, took) = connect(RedisOptions::new(format!("redis://127.0.0.1:{port}"))).await;
    assert!(took < CONNECT_BOUND, "took {took:?}");
    assert!(
        matches!(anonymous, Err(Error::BackplaneUnavailable { .. })),
        "{anonymous:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca() {
    init_logging();
    // A CA, and a server certificate for 127.0.0.1 signed by it.
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "switchboard test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server_params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let server_cert = server_params.signed_by(&server_key, &ca).unwrap();
    // An unrelated CA, to trust the wrong thing.
    let mut other_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    other_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let other_ca =
        CertifiedIssuer::self_signed(other_params, KeyPair::generate().unwrap()).unwrap();

    let dir = std::env::temp_dir().join(format!(
        "switchboard-tls-{}",
        switchboard_core::random_token()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_file, key_file, ca_file) = (
        dir.join("server.crt"),
        dir.join("server.key"),
        dir.join("ca.crt"),
    );
    std::fs::write(&cert_file, server_cert.pem()).unwrap();
    std::fs::write(&key_file, server_key.serialize_pem()).unwrap();
    std::fs::write(&ca_file, ca.pem()).unwrap();

    let tls_port = free_port();
    let _redis = RedisProcess::start_with(vec![
        "--tls-port".into(),
        tls_port.to_string(),
        "--tls-cert-file".into(),
        cert_file.display().to_string(),
        "--tls-key-file".into(),
        key_file.display().to_string(),
        "--tls-ca-cert-file".into(),
        ca_file.display().to_string(),
        "--tls-auth-clients".into(),
        "no".into(),
    ]);
    let url = format!("rediss://127.0.0.1:{tls_port}");

    // Trusting the CA: connects and works.
    assert_backplane_works(
        RedisOptions::new(&url)
            .hub("tls")
            .tls_root_certificates(ca.pem()),
    )
    .await;

    // Trusting another CA: refused at connect, with a TLS error.
    let (untrusted, took) =
        connect(RedisOptions::new(&url).tls_root_certificates(other_ca.pem())).await;
    assert!(took < CONNECT_BOUND, "took {took:?}");
    match untrusted {
        Err(e @ Error::BackplaneUnavailable { .. }) => {
            let text = e.to_string().to_lowercase();
            assert!(
                text.contains("certificate") || text.contains("tls"),
                "{text}"
            );
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }

    // The system roots do not know the private CA either.
    let (system, took) = connect(RedisOptions::new(&url)).await;
    assert!(took < CONNECT_BOUND, "took {took:?}");
    assert!(
        matches!(system, Err(Error::BackplaneUnavailable { .. })),
        "{system:?}"
    );

    // Plain redis:// against the TLS port does not hang either.
    let (plain, took) = connect(RedisOptions::new(format!("redis://127.0.0.1:{tls_port}"))).await;
    assert!(took < CONNECT_BOUND, "took {took:?}");
    assert!(plain.is_err());

    // Roots given for a non-TLS URL are a configuration mistake.
    let (mismatch, _) =
        connect(RedisOptions::new("redis://127.0.0.1:1").tls_root_certificates(ca.pem())).await;
    assert!(
        matches!(mismatch, Err(Error::InvalidConfig { .. })),
        "{mismatch:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The Redis password appears in no log line and no `Debug` or error text,
/// whether the connection succeeds, is refused for a wrong password, or
/// cannot reach the server. A current-thread runtime, so that the Redis
/// client's tasks log on the capturing thread.
#[tokio::test]
async fn passwords_never_reach_logs_or_debug_output() {
    use switchboard_tests::logs::CapturedLogs;
    let (logs, _guard) = CapturedLogs::start();
    let redis = acl_redis("s3cret-right");
    let port = redis.port();
    let secrets = ["s3cret-right", "s3cret-wrong"];
    let mut shown = Vec::new();

    let options = RedisOptions::new(format!("redis://switchboard:s3cret-right@127.0.0.1:{port}"))
        .hub("secrets");
    shown.push(format!("{options:?}"));
    let manager = RedisHubLifetimeManager::connect(options).await.unwrap();
    shown.push(format!("{manager:?}"));
    manager.shutdown().await;

    for url in [
        format!("redis://switchboard:s3cret-wrong@127.0.0.1:{port}"),
        format!("redis://switchboard:s3cret-wrong@127.0.0.1:{}", free_port()),
        "redis://switchboard:s3cret-wrong@".to_owned(),
    ] {
        let (result, _) = connect(RedisOptions::new(url)).await;
        let error = result.expect_err("a wrong password or no server must fail");
        shown.push(format!("{error:?}"));
        shown.push(error.to_string());
    }
    assert!(
        logs.text().contains("cannot connect to Redis"),
        "the failures were not logged:\n{}",
        logs.text()
    );
    for secret in secrets {
        logs.assert_absent(secret);
        for text in &shown {
            assert!(!text.contains(secret), "a secret in {text}");
        }
    }
}
