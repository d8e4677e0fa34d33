//! Who a client certificate says its client is.
//!
//! With `[server.tls] client_ca`, rustls verifies the client's chain
//! against the CA before any request is read; [`PeerIdentity::from_chain`]
//! then reads the verified end-entity certificate (the first of the chain)
//! and gives its names, each in one of three forms:
//!
//! | form | from | compared |
//! |---|---|---|
//! | `CN=billing` | each commonName of the subject | exactly (case and spaces count) |
//! | `DNS:billing.internal` | each dNSName of subjectAltName | ASCII case-insensitively, as DNS is |
//! | `URI:spiffe://corp/billing` | each URI of subjectAltName | exactly |
//!
//! A rule's `cert_subject` (`users = [{ name = "billing", cert_subject =
//! "CN=billing", ... }]`) is a [`CertName`] in one of those forms, and
//! grants when it equals any one of the certificate's names
//! ([`PeerIdentity::matches`]). Whole names only: no patterns, no
//! wildcards (a SAN `DNS:*.corp` is the literal name `*.corp`), no
//! matching on other subject attributes (`O=`, `OU=`), which any CA
//! that signs for several teams would let them share. A commonName or SAN
//! that is not text (a BMPString, say) gives no name, so it grants nothing.

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// One name a certificate gives its holder; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CertName {
    /// `CN=...`: a commonName of the subject.
    CommonName(String),
    /// `DNS:...`: a dNSName of subjectAltName, lowercased.
    Dns(String),
    /// `URI:...`: a URI of subjectAltName.
    Uri(String),
}

impl std::fmt::Display for CertName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertName::CommonName(cn) => write!(f, "CN={cn}"),
            CertName::Dns(name) => write!(f, "DNS:{name}"),
            CertName::Uri(uri) => write!(f, "URI:{uri}"),
        }
    }
}

/// A `cert_subject` that is none of the three forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a certificate name: write \"CN=<common name>\", \"DNS:<SAN DNS name>\" \
     or \"URI:<SAN URI>\""
)]
pub struct BadCertName(pub String);

impl std::str::FromStr for CertName {
    type Err = BadCertName;

    /// Parses `CN=billing`, `DNS:billing.internal` or `URI:spiffe://...`
    /// (the prefix as written here; the rest must not be empty).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = if let Some(cn) = s.strip_prefix("CN=") {
            CertName::CommonName(cn.to_owned())
        } else if let Some(dns) = s.strip_prefix("DNS:") {
            CertName::Dns(dns.to_ascii_lowercase())
        } else if let Some(uri) = s.strip_prefix("URI:") {
            CertName::Uri(uri.to_owned())
        } else {
            return Err(BadCertName(s.to_owned()));
        };
        match name {
            CertName::CommonName(ref v) | CertName::Dns(ref v) | CertName::Uri(ref v)
                if v.is_empty() =>
            {
                Err(BadCertName(s.to_owned()))
            }
            name => Ok(name),
        }
    }
}

/// What a verified client certificate says its client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The certificate's subject as written in it (`CN=billing, O=Corp`),
    /// for logs and audit records; never matched on.
    pub subject: String,
    /// Its names, in this order: commonNames, then SAN DNS names, then SAN
    /// URIs, each in certificate order. May be empty (a certificate with
    /// neither a commonName nor a SAN): such a client can be granted nothing.
    pub names: Vec<CertName>,
}

/// A peer chain that gives no identity (never from a chain rustls verified).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The peer presented no certificate.
    #[error("the peer presented no certificate")]
    NoCertificate,
    /// Its certificate does not parse.
    #[error("the peer's certificate does not parse: {0}")]
    Unparsable(String),
}

impl PeerIdentity {
    /// The identity in `chain`'s end-entity certificate (its first), as
    /// `ServerConnection::peer_certificates` gives it after a handshake.
    pub fn from_chain(chain: &[CertificateDer<'_>]) -> Result<Self, IdentityError> {
        let leaf = chain.first().ok_or(IdentityError::NoCertificate)?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| IdentityError::Unparsable(e.to_string()))?;
        let mut names: Vec<CertName> = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .map(|cn| CertName::CommonName(cn.to_owned()))
            .collect();
        let sans = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::Unparsable(e.to_string()))?;
        let general_names = sans
            .map(|ext| ext.value.general_names.as_slice())
            .unwrap_or_default();
        names.extend(general_names.iter().filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(CertName::Dns(dns.to_ascii_lowercase())),
            _ => None,
        }));
        names.extend(general_names.iter().filter_map(|name| match name {
            GeneralName::URI(uri) => Some(CertName::Uri((*uri).to_owned())),
            _ => None,
        }));
        Ok(Self {
            subject: cert.subject().to_string(),
            names,
        })
    }

    /// Whether `wanted` (a rule's `cert_subject`) is one of this
    /// certificate's names. DNS names are lowercased on both sides when
    /// made, so plain equality is the rule of the module docs.
    pub fn matches(&self, wanted: &CertName) -> bool {
        self.names.contains(wanted)
    }

    /// The name to show as the principal in logs: the first commonName,
    /// else the first SAN; `None` when the certificate has neither.
    pub fn primary(&self) -> Option<&CertName> {
        self.names.first()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    /// A self-signed certificate with commonName `cn` (if any) and `sans`.
    fn cert(cn: &[&str], sans: Vec<SanType>) -> CertificateDer<'static> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        if let Some(cn) = cn.first() {
            dn.push(DnType::CommonName, *cn);
        }
        dn.push(DnType::OrganizationName, "Corp");
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    fn name(s: &str) -> CertName {
        s.parse().unwrap()
    }

    #[test]
    fn names_come_from_common_names_then_dns_then_uri_sans() {
        let der = cert(
            &["billing"],
            vec![
                SanType::URI("spiffe://corp/billing".try_into().unwrap()),
                SanType::DnsName("Billing.Internal".try_into().unwrap()),
                SanType::IpAddress([10, 0, 0, 1].into()),
                SanType::Rfc822Name("billing@corp.example".try_into().unwrap()),
            ],
        );
        let id = PeerIdentity::from_chain(&[der]).unwrap();
        let names: Vec<String> = id.names.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "CN=billing",
                "DNS:billing.internal",
                "URI:spiffe://corp/billing"
            ]
        );
        assert_eq!(id.subject, "CN=billing, O=Corp");
        assert_eq!(id.primary(), Some(&name("CN=billing")));
    }

    #[test]
    fn a_rule_matches_a_whole_name_of_the_same_form() {
        let der = cert(
            &["billing"],
            vec![
                SanType::DnsName("billing.internal".try_into().unwrap()),
                SanType::URI("spiffe://corp/billing".try_into().unwrap()),
            ],
        );
        let id = PeerIdentity::from_chain(&[der]).unwrap();
        for granted in [
            "CN=billing",
            "DNS:billing.internal",
            "DNS:BILLING.internal",
            "URI:spiffe://corp/billing",
        ] {
            assert!(id.matches(&name(granted)), "{granted}");
        }
        for refused in [
            "CN=Billing",
            "CN=billing ",
            "CN=bill",
            "CN=billing.internal",
            "DNS:billing",
            "DNS:internal",
            "URI:spiffe://corp/billing/",
            "URI:billing.internal",
        ] {
            assert!(!id.matches(&name(refused)), "{refused}");
        }
    }

    #[test]
    fn a_nameless_certificate_grants_nothing() {
        let id = PeerIdentity::from_chain(&[cert(&[], vec![])]).unwrap();
        assert_eq!(id.names, []);
        assert_eq!(id.primary(), None);
        assert_eq!(id.subject, "O=Corp");
    }

    #[test]
    fn only_the_end_entity_certificate_speaks() {
        let leaf = cert(&["leaf"], vec![]);
        let issuer = cert(&["admin"], vec![]);
        let id = PeerIdentity::from_chain(&[leaf, issuer]).unwrap();
        assert!(id.matches(&name("CN=leaf")));
        assert!(!id.matches(&name("CN=admin")));
        assert_eq!(
            PeerIdentity::from_chain(&[]),
            Err(IdentityError::NoCertificate)
        );
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(matches!(
            PeerIdentity::from_chain(&[garbage]),
            Err(IdentityError::Unparsable(_))
        ));
    }

    #[test]
    fn rule_names_must_have_a_form_and_a_value() {
        for bad in ["billing", "cn=billing", "CN=", "DNS:", "URI:", "O=Corp", ""] {
            let err = bad.parse::<CertName>().unwrap_err();
            assert!(err.to_string().contains("\"CN=<common name>\""), "{err}");
        }
        assert_eq!(name("DNS:A.Example"), CertName::Dns("a.example".into()));
        assert_eq!(name("CN=a=b, O=c"), CertName::CommonName("a=b, O=c".into()));
    }
}
