//! TLS 1.3 for the transport: both sides show their node's ed25519 key as an RFC 7250 raw public key and check the
//! other's against the roster.
//!
//! Why raw public keys: a node *is* its key, so a certificate would only wrap the same 32 bytes in ~290 bytes of X.509
//! that nobody checks. On the wire a raw public key is the 44-byte SubjectPublicKeyInfo of the ed25519 key.
//!
//! The dialing side encodes the key it expects in the TLS server name ([`server_name_for`]: base32, one DNS label)
//! and its [`ServerCertVerifier`] refuses any other key; the accepting side's [`ClientCertVerifier`] asks the
//! [`Authorizer`]. Both verify the handshake signature themselves with `ed25519-dalek` (strict verification).
//! The private key never leaves [`NodeIdentity`]: rustls asks [`NodeIdentity::sign`] through [`IdentitySigningKey`].
//!
//! Session resumption is allowed (it halves the handshake time) but it skips both verifiers, so the transport checks
//! the roster again after every handshake (see [`super::Transport`]). 0-RTT is off on both sides and SNI is off.
//! The configs are built by hand: `ServerConfig::with_single_cert` would turn 0-RTT on.

use super::{ALPN, Authorizer, NODE_KEY_BYTES, NodeKey, TransportCounters, TransportError};
use crate::identity::NodeIdentity;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureAlgorithm, SignatureScheme};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING }.
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
/// An Ed25519 SubjectPublicKeyInfo is exactly the prefix plus the 32 key bytes: anything else is refused.
pub const ED25519_SPKI_BYTES: usize = ED25519_SPKI_PREFIX.len() + NODE_KEY_BYTES;
const _: () = assert!(ED25519_SPKI_BYTES == 44);

/// Session tickets the client keeps, one per peer key it dialed: a hall has at most a few dozen nodes.
const CLIENT_SESSIONS_MAX: usize = 256;
/// Resumable sessions the server remembers (stateful TLS 1.3 tickets): same reasoning as the client.
const SERVER_SESSIONS_MAX: usize = 256;

/// The 44-byte SubjectPublicKeyInfo of a node key, as sent in the TLS Certificate message.
pub fn spki_of(node_key: &NodeKey) -> Vec<u8> {
    let mut spki = Vec::with_capacity(ED25519_SPKI_BYTES);
    spki.extend_from_slice(&ED25519_SPKI_PREFIX);
    spki.extend_from_slice(node_key);
    spki
}

/// The node key inside an Ed25519 SubjectPublicKeyInfo, or `None` for any other encoding or algorithm.
pub fn node_key_of_spki(spki: &[u8]) -> Option<NodeKey> {
    if spki.len() != ED25519_SPKI_BYTES || spki[..ED25519_SPKI_PREFIX.len()] != ED25519_SPKI_PREFIX {
        return None;
    }
    spki[ED25519_SPKI_PREFIX.len()..].try_into().ok()
}

/// RFC 4648 base32, lowercase, no padding: 32 key bytes become 52 characters, one DNS label (at most 63).
pub fn base32_lower(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut text = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            text.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        text.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    text
}

/// The TLS server name of a dial that accepts any active member of the hall (a static peer known only by its
/// address). Not base32, so it can never equal [`server_name_for`] of a key; the verifier still asks the roster.
pub const ANY_MEMBER_SERVER_NAME: &str = "any-member.zhaowo";

/// The TLS server name that makes a dial expect `peer_key`: its base32 form, a single DNS label.
pub fn server_name_for(peer_key: &NodeKey) -> String {
    base32_lower(peer_key)
}

/// The crypto provider: ring only, with its TLS 1.3 suites (quinn needs TLS13_AES_128_GCM_SHA256 for Initial keys).
fn provider() -> Arc<CryptoProvider> {
    let ring = rustls::crypto::ring::default_provider();
    let cipher_suites = ring.cipher_suites.iter().copied().filter(|suite| suite.tls13().is_some()).collect();
    Arc::new(CryptoProvider { cipher_suites, ..ring })
}

fn tls_error(error: rustls::Error) -> TransportError {
    TransportError::TlsConfig(error.to_string())
}

fn certified_key(identity: &Arc<NodeIdentity>) -> Arc<CertifiedKey> {
    let key = IdentitySigningKey { identity: identity.clone() };
    let spki = spki_of(identity.verifying_key().as_bytes());
    Arc::new(CertifiedKey::new(vec![CertificateDer::from(spki)], Arc::new(key)))
}

/// The rustls client config of a node: raw public key, ALPN `alpn`, SNI off, 0-RTT off, resumption on.
///
/// Public so tests and tools can build a deliberately wrong peer (another ALPN); the transport itself passes [`ALPN`].
pub fn client_config(
    identity: &Arc<NodeIdentity>,
    authorizer: Arc<dyn Authorizer>,
    stats: Arc<TransportCounters>,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, TransportError> {
    let verifier = Arc::new(PeerVerifier { authorizer, stats });
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(rustls::client::AlwaysResolvesClientRawPublicKeys::new(certified_key(
            identity,
        ))));
    config.alpn_protocols = vec![alpn.to_vec()];
    // The server name carries the expected key, not a host: never send it in clear.
    config.enable_sni = false;
    config.enable_early_data = false;
    config.resumption = rustls::client::Resumption::in_memory_sessions(CLIENT_SESSIONS_MAX);
    Ok(config)
}

/// The rustls server config of a node: raw public key, client keys mandatory, ALPN [`ALPN`] only, 0-RTT off.
pub fn server_config(
    identity: &Arc<NodeIdentity>,
    authorizer: Arc<dyn Authorizer>,
    stats: Arc<TransportCounters>,
) -> Result<rustls::ServerConfig, TransportError> {
    let verifier = Arc::new(PeerVerifier { authorizer, stats });
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(rustls::server::AlwaysResolvesServerRawPublicKeys::new(certified_key(identity))));
    config.alpn_protocols = vec![ALPN.to_vec()];
    // 0-RTT data would reach us before the client's key is verified.
    config.max_early_data_size = 0;
    config.send_half_rtt_data = false;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SERVER_SESSIONS_MAX);
    Ok(config)
}

/// Verifies a peer's raw public key: the server's against the roster and the expected key in the server name, the
/// client's for form only (the roster is asked right after the handshake, so the refusal can carry its reason).
struct PeerVerifier {
    authorizer: Arc<dyn Authorizer>,
    stats: Arc<TransportCounters>,
}

impl std::fmt::Debug for PeerVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerVerifier").finish_non_exhaustive()
    }
}

impl PeerVerifier {
    fn authorized_key(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<NodeKey, rustls::Error> {
        self.stats.certificate_verifications.fetch_add(1, Ordering::Relaxed);
        if !intermediates.is_empty() {
            return Err(rustls::Error::InvalidCertificate(CertificateError::BadEncoding));
        }
        let key =
            node_key_of_spki(end_entity).ok_or(rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if !self.authorizer.is_authorized(&key) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure));
        }
        Ok(key)
    }

    fn verify_signature(
        message: &[u8],
        spki: &CertificateDer<'_>,
        signed: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let bad = || rustls::Error::InvalidCertificate(CertificateError::BadSignature);
        if signed.scheme != SignatureScheme::ED25519 {
            return Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::NoSignatureSchemesInCommon));
        }
        let key = node_key_of_spki(spki).ok_or(rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|_| bad())?;
        let signature = ed25519_dalek::Signature::from_slice(signed.signature()).map_err(|_| bad())?;
        key.verify_strict(message, &signature).map_err(|_| bad())?;
        Ok(HandshakeSignatureValid::assertion())
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let key = self.authorized_key(end_entity, intermediates)?;
        let expected = match server_name {
            ServerName::DnsName(name) => name.as_ref().to_owned(),
            _ => return Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName)),
        };
        if expected != ANY_MEMBER_SERVER_NAME && expected != server_name_for(&key) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _signed: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The configs only offer TLS 1.3; a TLS 1.2 signature is a peer bug or an attack.
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signed: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        PeerVerifier::verify_signature(message, cert, signed)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // The client's key is checked for form here (and its signature by `verify_tls13_signature`), but asked of the
        // roster only after the handshake (`Shared::register`, under the registry lock, before anything else happens
        // on the connection): a TLS alert carries no reason, an application close does, so a refused node learns
        // why (not enrolled, revoked) instead of waiting out its timeout (issue 14 §5). Nothing is exchanged with an
        // unauthorized client: the dialer counts the connection only after our hello, which a refused key never gets.
        self.stats.certificate_verifications.fetch_add(1, Ordering::Relaxed);
        if !intermediates.is_empty() {
            return Err(rustls::Error::InvalidCertificate(CertificateError::BadEncoding));
        }
        node_key_of_spki(end_entity).ok_or(rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _signed: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signed: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        PeerVerifier::verify_signature(message, cert, signed)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// rustls' view of the node key: it signs through [`NodeIdentity::sign`], so the secret stays inside the identity.
pub struct IdentitySigningKey {
    identity: Arc<NodeIdentity>,
}

impl std::fmt::Debug for IdentitySigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentitySigningKey").field("identity", &self.identity).finish()
    }
}

impl SigningKey for IdentitySigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ED25519)
            .then(|| Box::new(IdentitySigner { identity: self.identity.clone() }) as Box<dyn Signer>)
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(spki_of(self.identity.verifying_key().as_bytes())))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ED25519
    }
}

struct IdentitySigner {
    identity: Arc<NodeIdentity>,
}

impl std::fmt::Debug for IdentitySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentitySigner").field("identity", &self.identity).finish()
    }
}

impl Signer for IdentitySigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        Ok(self.identity.sign(message).to_vec())
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc_4648_vectors_and_a_key_fits_one_dns_label() {
        for (input, expected) in [
            ("", ""),
            ("f", "my"),
            ("fo", "mzxq"),
            ("foo", "mzxw6"),
            ("foob", "mzxw6yq"),
            ("fooba", "mzxw6ytb"),
            ("foobar", "mzxw6ytboi"),
        ] {
            assert_eq!(base32_lower(input.as_bytes()), expected, "{input:?}");
        }
        let name = server_name_for(&[0xff; 32]);
        assert_eq!(name.len(), 52);
        assert!(name.len() <= 63, "a DNS label holds at most 63 characters");
        assert!(ServerName::try_from(name).is_ok());
    }

    #[test]
    fn spki_round_trips_and_rejects_other_encodings() {
        let key = [7u8; 32];
        let spki = spki_of(&key);
        assert_eq!(spki.len(), ED25519_SPKI_BYTES);
        assert_eq!(node_key_of_spki(&spki), Some(key));
        assert_eq!(node_key_of_spki(&spki[..43]), None);
        let mut other_algorithm = spki.clone();
        other_algorithm[8] = 0x71; // 1.3.101.113 is Ed448.
        assert_eq!(node_key_of_spki(&other_algorithm), None);
    }
}
