//! TLS to the master: the CA the node verifies the master against (`mesh_master_ca`), read and
//! checked at configuration time, never on the event loop; and what the node says of a master
//! URL that is plain HTTP to another host.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use ureq::tls::{Certificate, PemItem, RootCerts};

/// Largest CA file read.
const MAX_CA_FILE: u64 = 1 << 20;

/// The certificates a node trusts for its master (a private CA's, usually one).
#[derive(Debug, Clone)]
pub struct MasterCa {
    certs: Arc<Vec<Certificate<'static>>>,
}

impl MasterCa {
    /// The certificates of a PEM file: at least one, each a usable trust anchor. Errors in
    /// nginx's short wording, for `nginx -t` ("no certificate in it", "cannot open ...").
    pub fn read(path: &Path) -> Result<MasterCa, String> {
        let mut f = std::fs::File::open(path).map_err(|e| crate::load::os_error("open", e))?;
        let mut pem = Vec::new();
        (&mut f).take(MAX_CA_FILE + 1).read_to_end(&mut pem).map_err(|e| crate::load::os_error("read", e))?;
        if pem.len() as u64 > MAX_CA_FILE {
            return Err(format!("larger than {MAX_CA_FILE} bytes"));
        }
        MasterCa::from_pem(&pem)
    }

    /// As [`MasterCa::read`], of the file's bytes.
    pub fn from_pem(pem: &[u8]) -> Result<MasterCa, String> {
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(pem) {
            match item {
                Ok(PemItem::Certificate(c)) => certs.push(c),
                Ok(_) => {}
                Err(e) => return Err(format!("invalid PEM: {e}")),
            }
        }
        if certs.is_empty() {
            return Err("no certificate in it".into());
        }
        for (i, c) in certs.iter().enumerate() {
            let der = rustls::pki_types::CertificateDer::from(c.der());
            rustls::RootCertStore::empty()
                .add(der)
                .map_err(|e| format!("certificate {} is not usable as a CA: {e}", i + 1))?;
        }
        Ok(MasterCa { certs: Arc::new(certs) })
    }

    /// How many certificates it holds.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Never true (a CA file has at least one certificate).
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    pub(crate) fn root_certs(&self) -> RootCerts {
        RootCerts::Specific(self.certs.clone())
    }
}

/// The host of an `http(s)://host[:port][/prefix]` URL, without brackets.
fn host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or_default();
    }
    authority.split(':').next().unwrap_or_default()
}

/// Whether `url` is plain HTTP to a host that is not this machine's loopback (the node's key,
/// its tables and the viewer secret would cross a network in clear): `nginx -t` warns.
pub fn plain_to_remote(url: &str) -> bool {
    if !url.starts_with("http://") {
        return false;
    }
    let h = host(url);
    let loopback =
        h.eq_ignore_ascii_case("localhost") || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    !loopback
}

/// A TLS failure as the node logs it, naming the master and, when it is one, the certificate.
pub(crate) fn describe(base: &str, e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => {
            let why = match c {
                rustls::CertificateError::UnknownIssuer => "its issuer is not a CA the node trusts".into(),
                rustls::CertificateError::BadSignature => "not signed by a CA the node trusts".into(),
                c => c.to_string(),
            };
            format!("certificate of master \"{base}\" refused: {why} (check mesh_master_ca)")
        }
        e => format!("TLS with master \"{base}\" failed: {e}"),
    }
}

/// The rustls error behind a ureq error, if one is.
pub(crate) fn rustls_error(e: &ureq::Error) -> Option<&rustls::Error> {
    match e {
        ureq::Error::Rustls(r) => Some(r),
        ureq::Error::Io(io) => io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_to_another_host_is_told() {
        for url in
            ["http://10.0.0.1:8000", "http://master:8000", "http://example.org", "http://[2001:db8::1]:80"]
        {
            assert!(plain_to_remote(url), "{url}");
        }
        for url in [
            "http://127.0.0.1:8000",
            "http://127.9.9.9",
            "http://localhost:8000/mesh",
            "http://[::1]:8000",
            "https://master:8443",
        ] {
            assert!(!plain_to_remote(url), "{url}");
        }
    }

    #[test]
    fn a_refused_certificate_names_the_master() {
        let e = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        assert_eq!(
            describe("https://m:8443", &e),
            "certificate of master \"https://m:8443\" refused: its issuer is not a CA the node trusts (check mesh_master_ca)"
        );
        let e = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        assert!(describe("https://m", &e).starts_with("certificate of master \"https://m\" refused: "));
        let e = rustls::Error::NoCertificatesPresented;
        assert!(describe("https://m", &e).starts_with("TLS with master \"https://m\" failed: "));
    }

    #[test]
    fn a_ca_file_needs_a_certificate() {
        assert_eq!(MasterCa::from_pem(b"").unwrap_err(), "no certificate in it");
        assert_eq!(MasterCa::from_pem(b"hello\n").unwrap_err(), "no certificate in it");
        let key_only = b"-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n";
        assert_eq!(MasterCa::from_pem(key_only).unwrap_err(), "no certificate in it");
        let junk = b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
        let e = MasterCa::from_pem(junk).unwrap_err();
        assert!(e.starts_with("certificate 1 is not usable as a CA"), "{e}");
        let e = MasterCa::read(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(e.contains("open"), "{e}");
    }
}
