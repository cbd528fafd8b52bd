use super::*;
use codex_pool_mock_model::{MockConfig, MockModel, TlsOptions};

fn setup(dir: &Path, bundle: CaBundle, hosts: ModelHosts, system: SystemRoots) -> CaSetup {
    CaSetup { bundle, hosts, system, dir: dir.join("tls"), probe_timeout: Duration::from_secs(5) }
}

/// The fake model over HTTPS, and a file of "system roots": two unrelated roots and its CA.
async fn tls_mock(dir: &Path) -> (MockModel, PathBuf) {
    let ca_path = dir.join("mock-ca.pem");
    let mock =
        MockModel::start(MockConfig { tls: Some(TlsOptions { ca_path }), ..MockConfig::default() }).await.unwrap();
    let system = dir.join("system.pem");
    let roots = [placeholder().unwrap(), mock.ca_der().unwrap().clone(), placeholder().unwrap()];
    std::fs::write(&system, encode_pem(&roots)).unwrap();
    (mock, system)
}

fn hosts_of(mock: &MockModel) -> ModelHosts {
    ModelHosts::of_provider(Some(&mock.base_url())).unwrap()
}

#[test]
fn provider_urls_name_their_hosts() {
    let https = |host: &str, port| ModelHosts::Https(vec![HttpsHost { host: host.into(), port }]);
    assert_eq!(ModelHosts::of_provider(Some("http://127.0.0.1:8080/v1")).unwrap(), ModelHosts::PlainHttp);
    assert_eq!(ModelHosts::of_provider(Some("https://api.example.com/v1")).unwrap(), https("api.example.com", 443));
    assert_eq!(ModelHosts::of_provider(Some("HTTPS://u:p@h.example:8443?x=1")).unwrap(), https("h.example", 8443));
    assert_eq!(ModelHosts::of_provider(Some("https://[::1]:9/v1")).unwrap(), https("::1", 9));
    let ModelHosts::Https(openai) = ModelHosts::of_provider(None).unwrap() else { panic!() };
    let names: Vec<&str> = openai.iter().map(|h| h.host.as_str()).collect();
    assert_eq!(names, OPENAI_HOSTS);
    for bad in ["127.0.0.1:8080/v1", "ftp://h/v1", "https:///v1", "https://h:port/v1"] {
        let err = ModelHosts::of_provider(Some(bad)).unwrap_err();
        assert!(err.to_string().contains("https://HOST[:PORT]"), "{err}");
    }
}

#[test]
fn settings_read_and_print_the_same() {
    for s in ["auto", "system", "/etc/my-roots.pem"] {
        assert_eq!(s.parse::<CaBundle>().unwrap().to_string(), s);
    }
    assert_eq!("system".parse::<CaBundle>().unwrap(), CaBundle::System);
    assert!("  ".parse::<CaBundle>().unwrap_err().to_string().contains("auto, system or the path"));
}

#[tokio::test]
async fn a_plain_http_provider_gets_one_placeholder_and_an_empty_folder() {
    let dir = tempfile::tempdir().unwrap();
    let plain = setup(dir.path(), CaBundle::Auto, ModelHosts::PlainHttp, SystemRoots::Inherited);
    let resolved = plain.resolve().await.unwrap();
    assert_eq!((resolved.kind.to_string(), resolved.roots), ("minimal".to_owned(), Some(1)));
    let files = resolved.files.unwrap();
    let certs = read_certs(&files.cert_file).unwrap();
    assert_eq!(certs.len(), 1);
    assert!(certs[0].windows(11).any(|w| w == b"placeholder"), "the placeholder's name says what it is");
    assert_eq!(std::fs::read_dir(&files.cert_dir).unwrap().count(), 0);
    // An explicit setting is kept even for plain http.
    let system = setup(dir.path(), CaBundle::System, ModelHosts::PlainHttp, SystemRoots::Inherited);
    assert_eq!(system.resolve().await.unwrap().files, None);
}

#[tokio::test]
async fn a_bundle_without_certificates_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "nothing\n").unwrap();
    let hosts = ModelHosts::of_provider(None).unwrap();
    let err = setup(dir.path(), CaBundle::Path(empty), hosts.clone(), SystemRoots::Inherited).resolve().await;
    assert!(matches!(err, Err(CaError::EmptyBundle { .. })), "{err:?}");
    let missing = CaBundle::Path(dir.path().join("missing.pem"));
    let err = setup(dir.path(), missing, hosts, SystemRoots::Inherited).resolve().await.unwrap_err();
    assert!(err.to_string().contains("missing.pem") && err.to_string().contains("--ca-bundle system"), "{err}");
}

#[tokio::test]
async fn auto_keeps_just_the_root_that_anchors_the_fake_model() {
    let dir = tempfile::tempdir().unwrap();
    let (mock, system) = tls_mock(dir.path()).await;
    let auto = setup(dir.path(), CaBundle::Auto, hosts_of(&mock), SystemRoots::File(system));
    let resolved = auto.resolve().await.unwrap();
    assert_eq!((resolved.kind.clone(), resolved.roots, resolved.note.clone()), (CaKind::Auto, Some(1), None));
    let bundle = read_certs(&resolved.files.as_ref().unwrap().cert_file).unwrap();
    assert_eq!(bundle, vec![mock.ca_der().unwrap().clone()]);
    // The bundle codex has verifies the model: a connection failure is not its fault.
    assert!(
        matches!(auto.diagnose(&resolved).await, Diagnosis::NotTheBundle(why) if why.contains("the bundle verifies it"))
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn auto_ends_on_the_system_roots_when_a_host_cannot_be_probed() {
    let dir = tempfile::tempdir().unwrap();
    let (mock, system) = tls_mock(dir.path()).await;
    // System roots that lack the fake model's CA: auto cannot verify it.
    let unrelated = dir.path().join("unrelated.pem");
    std::fs::write(&unrelated, encode_pem(&[placeholder().unwrap()])).unwrap();
    let resolved = setup(dir.path(), CaBundle::Auto, hosts_of(&mock), SystemRoots::File(unrelated.clone()))
        .resolve()
        .await
        .unwrap();
    assert_eq!(resolved.kind, CaKind::System);
    assert!(resolved.note.as_deref().unwrap().contains("the system roots do not verify"), "{resolved:?}");
    assert_eq!(resolved.files.unwrap().cert_file, unrelated, "the file that stands for the system roots");
    // A closed port: no handshake.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let hosts = ModelHosts::of_provider(Some(&format!("https://{closed}/v1"))).unwrap();
    let resolved = setup(dir.path(), CaBundle::Auto, hosts, SystemRoots::File(system)).resolve().await.unwrap();
    assert_eq!((resolved.kind, resolved.files.is_some()), (CaKind::System, true));
    assert!(resolved.note.unwrap().contains("no TLS handshake with 127.0.0.1"));
    mock.shutdown().await;
}

#[tokio::test]
async fn diagnose_blames_a_bundle_that_lacks_the_root_the_system_has() {
    let dir = tempfile::tempdir().unwrap();
    let (mock, system) = tls_mock(dir.path()).await;
    let lacking = dir.path().join("lacking.pem");
    std::fs::write(&lacking, encode_pem(&[placeholder().unwrap()])).unwrap();
    let path = setup(dir.path(), CaBundle::Path(lacking.clone()), hosts_of(&mock), SystemRoots::File(system));
    let resolved = path.resolve().await.unwrap();
    assert!(resolved.is_reduced());
    let Diagnosis::BundleRejects { host, error } = path.diagnose(&resolved).await else { panic!("not blamed") };
    assert_eq!(host.to_string(), mock.addr().to_string());
    assert_eq!(error, VerifyError::Chain(webpki::Error::UnknownIssuer));
    // When the system roots reject it too, the bundle is not to blame.
    let blind = CaSetup { system: SystemRoots::File(lacking), ..path.clone() };
    assert!(matches!(blind.diagnose(&resolved).await, Diagnosis::NotTheBundle(why) if why.contains("reject it too")));
    // The system roots themselves are never blamed.
    let system = path.system_roots(None).unwrap();
    assert!(matches!(path.diagnose(&system).await, Diagnosis::NotTheBundle(_)));
    mock.shutdown().await;
}
