//! What the IR says of a Gateway's servers: TLS mode (unset on an HTTPS
//! server with `tls` settings: PASSTHROUGH, as Istio reads it), how a
//! terminating server gets its certificate and which client certificates
//! it takes (names, pinned digests), and `httpsRedirect`.

use meshc_compiler::{Input, Options, compile};
use meshc_ir::{GatewayServer, Termination};

const POLICY: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: edge}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ingress, namespace: edge}
spec:
  selector: {matchLabels: {app: ingress}}
  template: {metadata: {labels: {app: ingress}}, spec: {}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: edge}
spec:
  selector: {app: ingress}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [shop.example.com]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [edge/shop.example.com]
    tls: {mode: SIMPLE, credentialName: shop-cert, minProtocolVersion: TLSV1_3}
  - port: {number: 8443, name: https-partner, protocol: HTTPS}
    hosts: [partner.example.com]
    tls:
      mode: MUTUAL
      tlsCertificates: [{serverCertificate: /c.pem, privateKey: /k.pem, caCertificates: /ca.pem}]
      subjectAltNames: [spiffe://partner/client]
      caCrl: /crl.pem
      verifyCertificateHash: ["AB:CD:EF"]
      verifyCertificateSpki: [q83vEjRWeJA=]
      cipherSuites: ["[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]", ECDHE-RSA-AES256-GCM-SHA384]
      ecdhCurves: [X25519, P-256]
  - port: {number: 9443, name: https-through, protocol: HTTPS}
    hosts: [db.example.com]
    tls: {credentialName: unused}
"#;

#[test]
fn servers_lower_with_their_tls() {
    let c = compile(vec![Input::new("gw.yaml", POLICY)], &Options::default());
    let ir = c.ir.as_ref().unwrap_or_else(|e| {
        panic!(
            "{e:?}: {:?}",
            c.analysis
                .diagnostics
                .iter()
                .map(|d| &d.message)
                .collect::<Vec<_>>()
        )
    });
    let servers = &ir.gateways["edge/public"].servers;
    let server = |port, tls: Option<&str>, termination, https_redirect, host: &str| GatewayServer {
        port,
        protocol: if port == 80 { "HTTP" } else { "HTTPS" }.into(),
        hosts: vec![host.into()],
        tls: tls.map(str::to_string),
        termination,
        https_redirect,
    };
    assert_eq!(
        servers,
        &vec![
            server(80, None, None, true, "shop.example.com"),
            server(
                443,
                Some("SIMPLE"),
                Some(Termination {
                    credential_name: Some("shop-cert".into()),
                    min_protocol_version: Some("TLSV1_3".into()),
                    ..Termination::default()
                }),
                false,
                "shop.example.com"
            ),
            server(
                8443,
                Some("MUTUAL"),
                Some(Termination {
                    server_certificate: Some("/c.pem".into()),
                    private_key: Some("/k.pem".into()),
                    ca_certificates: Some("/ca.pem".into()),
                    ca_crl: Some("/crl.pem".into()),
                    subject_alt_names: vec!["spiffe://partner/client".into()],
                    verify_certificate_hash: vec!["AB:CD:EF".into()],
                    verify_certificate_spki: vec!["q83vEjRWeJA=".into()],
                    cipher_suites: vec![
                        "[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]".into(),
                        "ECDHE-RSA-AES256-GCM-SHA384".into(),
                    ],
                    ecdh_curves: vec!["X25519".into(), "P-256".into()],
                    ..Termination::default()
                }),
                false,
                "partner.example.com"
            ),
            server(9443, Some("PASSTHROUGH"), None, false, "db.example.com"),
        ]
    );
}
