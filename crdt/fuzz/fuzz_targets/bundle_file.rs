//! Fuzz target: a bundle file as `zhaowo bundle import` reads it. On disk a bundle is an age file (issue 13 §4): the
//! age header and stanzas are parsed and the payload decrypted with a fixed node key, as the node's import does with
//! its own (`zhaowo_node::import::read_bundle`), and what decrypts goes to `zhaowo_crdt::fuzzing::bundle_file`. The
//! inner format is fuzzed directly too (a mutated ciphertext never authenticates, so only a direct call reaches it).
//! Seeds: `fuzz/seeds/bundle_file/` (an inner bundle, and the same bundle encrypted to the fixed key).
#![no_main]

use std::io::Read;

/// The fixed node key of the seeds: the X25519 scalar of the Ed25519 key `[0x42; 32]`, as `NodeIdentity` derives it.
fn identity() -> &'static age::x25519::Identity {
    static IDENTITY: std::sync::OnceLock<age::x25519::Identity> = std::sync::OnceLock::new();
    IDENTITY.get_or_init(|| {
        use bech32::ToBase32;
        let secret = ed25519_dalek::SigningKey::from_bytes(&[0x42; 32]).to_scalar_bytes();
        let encoded = bech32::encode("age-secret-key-", secret.to_base32(), bech32::Variant::Bech32).unwrap();
        encoded.to_uppercase().parse().unwrap()
    })
}

libfuzzer_sys::fuzz_target!(
    // libfuzzer-sys aborts on any panic; Automerge panics caught inside the node's isolation boundary
    // (`catch_unwind`) are expected outcomes, so a silent hook lets them unwind to it. A panic that escapes is still
    // a crash: libfuzzer-sys aborts when the target itself unwinds.
    init: std::panic::set_hook(Box::new(|_| {})),
    |data: &[u8]| {
        if let Ok(decryptor) = age::Decryptor::new_buffered(data)
            && let Ok(reader) = decryptor.decrypt(std::iter::once(identity() as &dyn age::Identity))
        {
            let mut inner = Vec::new();
            if reader.take(1 << 20).read_to_end(&mut inner).is_ok() {
                let _ = zhaowo_crdt::fuzzing::bundle_file(&inner);
            }
        }
        let _ = zhaowo_crdt::fuzzing::bundle_file(data);
    }
);
