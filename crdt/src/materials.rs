//! Materials on a case file (issue 16 §1, the first part): what an uploaded file is, judged by its content (magic
//! bytes, never the name or the browser's type), the named size limits, and the metadata stripped before anything is
//! stored: a phone photo's EXIF carries GPS coordinates and the device's serial number, a scan's XMP the software and
//! sometimes a name.
//!
//! [`clean`] is a strict structural pass over hostile input: JPEG segments, PNG chunks and WebP RIFF chunks are walked
//! with every length checked against what remains, metadata segments are dropped, everything needed to show the
//! image is kept byte for byte (no re-encoding, so no quality loss and no image decoder in the core). A file that
//! does not parse is refused, not passed through. PDF files are checked for their header and end marker and kept as
//! they are: stripping a PDF's document information needs a PDF parser, which this module does not have (see
//! ARCHITECTURE.md, *Personal data*: materials are sealed under the case key anyway).
//!
//! The `material_file` fuzz target checks that [`clean`] never panics, that its output is of the same type, no
//! larger, and already clean (cleaning it again changes nothing).

/// One material file: 10 MiB holds a phone photo (3–6 MB) or a multi-page scan at 300 dpi; larger files are
/// refused with the limit named, so a clerk scans in parts.
pub const MATERIAL_BYTES_MAX: usize = 10 * 1024 * 1024;
/// All materials of one case: 100 MiB, ten full-size files (李先生's case needed six papers).
pub const CASE_MATERIALS_BYTES_MAX: usize = 100 * 1024 * 1024;
/// Material files on one case.
pub const CASE_MATERIALS_MAX: usize = 50;
/// Segments or chunks walked in one file: a real image has tens; a crafted one with millions of empty chunks is
/// refused before it costs time.
pub const MATERIAL_PARTS_MAX: usize = 10_000;

/// The kinds of material a case accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MaterialType {
    Jpeg,
    Png,
    Webp,
    Pdf,
}

impl MaterialType {
    pub fn mime(self) -> &'static str {
        match self {
            MaterialType::Jpeg => "image/jpeg",
            MaterialType::Png => "image/png",
            MaterialType::Webp => "image/webp",
            MaterialType::Pdf => "application/pdf",
        }
    }

    pub fn zh(self) -> &'static str {
        match self {
            MaterialType::Jpeg => "JPEG 图片",
            MaterialType::Png => "PNG 图片",
            MaterialType::Webp => "WebP 图片",
            MaterialType::Pdf => "PDF 文件",
        }
    }
}

/// Why a file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaterialError {
    #[error("the file is empty")]
    Empty,
    #[error("the file is {bytes} bytes, the limit is {max}")]
    TooLarge { bytes: usize, max: usize },
    #[error("not a JPEG, PNG, WebP or PDF file (judged by its content)")]
    UnknownType,
    #[error("damaged {kind:?} file: {reason}")]
    Malformed { kind: MaterialType, reason: &'static str },
}

impl MaterialError {
    /// The sentence a clerk or a citizen reads.
    pub fn zh(&self) -> String {
        match self {
            MaterialError::Empty => "文件是空的，请重新选择。".to_owned(),
            MaterialError::TooLarge { max, .. } => {
                format!("文件超过 {} MB 的上限，请压缩或分页后再上传。", max / (1024 * 1024))
            }
            MaterialError::UnknownType => "只接受 JPEG、PNG、WebP 图片和 PDF 文件。".to_owned(),
            MaterialError::Malformed { kind, .. } => format!("{}已损坏或格式不正确，无法接收。", kind.zh()),
        }
    }
}

/// A size for people: 1.2 MB, 350 KB.
pub fn size_zh(bytes: u64) -> String {
    if bytes >= 1024 * 1024 {
        format!("{:.1} MB", bytes as f64 / (1024.0 * 1024.0))
    } else {
        format!("{} KB", bytes.div_ceil(1024).max(1))
    }
}

/// The type of a file by its first bytes.
pub fn sniff(bytes: &[u8]) -> Option<MaterialType> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(MaterialType::Jpeg)
    } else if bytes.starts_with(PNG_SIGNATURE) {
        Some(MaterialType::Png)
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(MaterialType::Webp)
    } else if bytes.starts_with(b"%PDF-") {
        Some(MaterialType::Pdf)
    } else {
        None
    }
}

/// Checks a file and returns its type and its bytes without metadata (see the module comment).
pub fn clean(bytes: &[u8]) -> Result<(MaterialType, Vec<u8>), MaterialError> {
    if bytes.is_empty() {
        return Err(MaterialError::Empty);
    }
    if bytes.len() > MATERIAL_BYTES_MAX {
        return Err(MaterialError::TooLarge { bytes: bytes.len(), max: MATERIAL_BYTES_MAX });
    }
    let kind = sniff(bytes).ok_or(MaterialError::UnknownType)?;
    let malformed = |reason| MaterialError::Malformed { kind, reason };
    let cleaned = match kind {
        MaterialType::Jpeg => clean_jpeg(bytes),
        MaterialType::Png => clean_png(bytes),
        MaterialType::Webp => clean_webp(bytes),
        MaterialType::Pdf => check_pdf(bytes).map(|()| bytes.to_vec()),
    }
    .map_err(malformed)?;
    Ok((kind, cleaned))
}

// ---- JPEG: SOI, then segments (FF xx, big-endian length including itself) up to SOS, then the entropy-coded scan
// and everything after it, copied as is (progressive files have more segments between scans, none of them metadata
// a camera writes there; EXIF and XMP are APP1 before the first frame).

/// The EXIF orientation (1–8) of an APP1 segment's data (`Exif\0\0` + TIFF), if it holds one in IFD0.
fn exif_orientation(data: &[u8]) -> Option<u16> {
    let tiff = data.strip_prefix(b"Exif\0\0")?;
    let big = match tiff.get(..2)? {
        b"MM" => true,
        b"II" => false,
        _ => return None,
    };
    let u16_at = |at: usize| {
        let pair = [*tiff.get(at)?, *tiff.get(at + 1)?];
        Some(if big { u16::from_be_bytes(pair) } else { u16::from_le_bytes(pair) })
    };
    let u32_at = |at: usize| {
        let quad = [*tiff.get(at)?, *tiff.get(at + 1)?, *tiff.get(at + 2)?, *tiff.get(at + 3)?];
        Some(if big { u32::from_be_bytes(quad) } else { u32::from_le_bytes(quad) })
    };
    if u16_at(2)? != 42 {
        return None;
    }
    let ifd = usize::try_from(u32_at(4)?).ok()?;
    let count = usize::from(u16_at(ifd)?);
    (0..count.min(MATERIAL_PARTS_MAX)).find_map(|index| {
        let entry = ifd.checked_add(2 + index * 12)?;
        // Tag 0x0112 (Orientation), type SHORT, one value.
        (u16_at(entry)? == 0x0112 && u16_at(entry + 2)? == 3 && u32_at(entry + 4)? == 1)
            .then(|| u16_at(entry + 8))
            .flatten()
            .filter(|orientation| (2..=8).contains(orientation))
    })
}

/// A minimal EXIF segment (APP1) holding only the orientation: a phone stores a portrait photo sideways and says
/// so in this tag, so dropping it would show the photo (and its thumbnail) turned. 36 bytes, never more than the
/// segment it replaces (which held at least this much to carry the tag).
fn orientation_segment(orientation: u16) -> Vec<u8> {
    let mut segment = vec![0xFF, 0xE1, 0x00, 0x22];
    segment.extend_from_slice(b"Exif\0\0MM\0\x2A\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01");
    segment.extend_from_slice(&orientation.to_be_bytes());
    segment.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    segment
}

fn clean_jpeg(bytes: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&[0xFF, 0xD8]);
    let mut at = 2;
    let mut parts = 0;
    // The orientation of the first EXIF segment that has one, and where its minimal segment goes (after SOI and a
    // JFIF APP0, where an EXIF segment belongs).
    let mut orientation = None;
    let mut insert_at = 2;
    loop {
        parts += 1;
        if parts > MATERIAL_PARTS_MAX {
            return Err("too many segments");
        }
        // Fill bytes (FF FF …) may precede a marker.
        while bytes.get(at) == Some(&0xFF) && bytes.get(at + 1) == Some(&0xFF) {
            at += 1;
        }
        let (Some(&0xFF), Some(&marker)) = (bytes.get(at), bytes.get(at + 1)) else {
            return Err("a segment does not start with a marker");
        };
        match marker {
            // EOI before any scan: an image without pixels.
            0xD9 => return Err("no image data"),
            // Markers without a length (RSTn, TEM) are not valid before the first scan.
            0x01 | 0xD0..=0xD7 | 0xD8 => return Err("unexpected marker before the image data"),
            _ => {}
        }
        let length = usize::from(u16::from_be_bytes([
            *bytes.get(at + 2).ok_or("truncated segment")?,
            *bytes.get(at + 3).ok_or("truncated segment")?,
        ]));
        if length < 2 {
            return Err("a segment length below 2");
        }
        let end = at + 2 + length;
        if end > bytes.len() {
            return Err("a segment runs past the end of the file");
        }
        let keep = match marker {
            // APP0 (JFIF) and APP14 (Adobe: colour transform) are needed to show the image right; every other APPn
            // (EXIF, XMP, ICC is APP2 — dropped too: colours shift slightly on wide-gamut photos, no location leaks),
            // and COM (free text) are metadata.
            0xE0 | 0xEE => true,
            0xE1..=0xED | 0xEF | 0xFE => false,
            _ => true,
        };
        // Only a segment at least as large as the one that replaces it, so a file never grows.
        if marker == 0xE1 && orientation.is_none() && end - at >= 36 {
            orientation = exif_orientation(&bytes[at + 4..end]);
        }
        if keep {
            out.extend_from_slice(&bytes[at..end]);
            if marker == 0xE0 && insert_at == 2 && out.len() == 2 + (end - at) {
                insert_at = out.len();
            }
        }
        at = end;
        if marker == 0xDA {
            // Start of scan: the rest is image data (with its own markers), up to and including EOI.
            let rest = &bytes[at..];
            if !rest.windows(2).any(|pair| pair == [0xFF, 0xD9]) {
                return Err("no end-of-image marker");
            }
            out.extend_from_slice(rest);
            if let Some(orientation) = orientation {
                out.splice(insert_at..insert_at, orientation_segment(orientation));
            }
            return Ok(out);
        }
    }
}

// ---- PNG: signature, then chunks (length, type, data, CRC-32 over type and data); IHDR first, IEND last.

const PNG_SIGNATURE: &[u8] = &[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn clean_png(bytes: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(PNG_SIGNATURE);
    let mut at = PNG_SIGNATURE.len();
    let mut parts = 0;
    loop {
        parts += 1;
        if parts > MATERIAL_PARTS_MAX {
            return Err("too many chunks");
        }
        let header = bytes.get(at..at + 8).ok_or("truncated chunk")?;
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let kind: [u8; 4] = [header[4], header[5], header[6], header[7]];
        let end = at.checked_add(12 + length).filter(|end| *end <= bytes.len()).ok_or("a chunk runs past the end")?;
        let stored_crc = u32::from_be_bytes(bytes[end - 4..end].try_into().expect("4 bytes"));
        if crc32(&bytes[at + 4..end - 4]) != stored_crc {
            return Err("a chunk's checksum does not match");
        }
        if parts == 1 && &kind != b"IHDR" {
            return Err("the first chunk is not IHDR");
        }
        // Critical chunks and the ancillary chunks that change how the image looks; text, EXIF and time are dropped
        // (tEXt, zTXt, iTXt, eXIf, tIME and any unknown ancillary chunk).
        let keep = matches!(
            &kind,
            b"IHDR" | b"PLTE" | b"IDAT" | b"IEND" | b"tRNS" | b"gAMA" | b"cHRM" | b"sRGB" | b"sBIT" | b"pHYs" | b"bKGD"
        ) || (kind[0].is_ascii_uppercase() && kind.iter().all(u8::is_ascii_alphabetic));
        if !kind.iter().all(u8::is_ascii_alphabetic) {
            return Err("a chunk type is not four letters");
        }
        if keep {
            out.extend_from_slice(&bytes[at..end]);
        }
        at = end;
        if &kind == b"IEND" {
            return Ok(out);
        }
    }
}

// ---- WebP: RIFF size "WEBP", then chunks (FourCC, little-endian size, data, padded to even); VP8X flags say which
// optional chunks exist.

fn clean_webp(bytes: &[u8]) -> Result<Vec<u8>, &'static str> {
    let riff = u32::from_le_bytes(bytes[4..8].try_into().expect("sniffed")) as usize;
    let total = riff.checked_add(8).filter(|total| *total <= bytes.len()).ok_or("the RIFF size is past the end")?;
    let mut body = Vec::with_capacity(total);
    body.extend_from_slice(b"WEBP");
    let mut at = 12;
    let mut parts = 0;
    let mut vp8x_at = None;
    while at < total {
        parts += 1;
        if parts > MATERIAL_PARTS_MAX {
            return Err("too many chunks");
        }
        let header = bytes.get(at..at + 8).filter(|_| at + 8 <= total).ok_or("truncated chunk")?;
        let kind: [u8; 4] = [header[0], header[1], header[2], header[3]];
        let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let end =
            at.checked_add(8 + size + (size & 1)).filter(|end| *end <= total).ok_or("a chunk runs past the end")?;
        match &kind {
            b"EXIF" | b"XMP " => {}
            b"VP8X" => {
                if size < 10 {
                    return Err("a VP8X chunk shorter than 10 bytes");
                }
                vp8x_at = Some(body.len());
                body.extend_from_slice(&bytes[at..end]);
            }
            _ => body.extend_from_slice(&bytes[at..end]),
        }
        at = end;
    }
    if parts == 0 {
        return Err("no chunks");
    }
    if let Some(vp8x) = vp8x_at {
        // The flags byte after the chunk header: bit 3 EXIF, bit 2 XMP (RFC 9649 §2.7); the chunks are gone.
        body[vp8x + 8] &= !0b0000_1100;
    }
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&u32::try_from(body.len()).map_err(|_| "too large")?.to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

// ---- PDF: a header and an end-of-file marker near the end (kept as is, see the module comment).

fn check_pdf(bytes: &[u8]) -> Result<(), &'static str> {
    let tail = &bytes[bytes.len().saturating_sub(1024)..];
    if !tail.windows(5).any(|window| window == b"%%EOF") {
        return Err("no %%EOF marker at the end");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// Sealed material files (issue 16 §2): what the blob store holds and peers transfer.

/// A thumbnail (a fresh JPEG of at most 240 × 240 px made by the node): 256 KiB is ten times what one needs.
pub const THUMBNAIL_BYTES_MAX: usize = 256 * 1024;
/// Characters of a material's file name (sealed: a name like 张三身份证.jpg is personal data).
pub const MATERIAL_NAME_CHARS_MAX: usize = 100;
/// The magic bytes of a sealed material file (format version 1).
pub const BLOB_MAGIC: &[u8; 4] = b"zmb1";
/// Bytes a sealed file adds to its content: magic, 24-byte nonce, 16-byte tag.
pub const BLOB_OVERHEAD: usize = 4 + 24 + 16;
/// The largest sealed file a node stores or accepts from a peer: a material at its limit, sealed.
pub const SEALED_BLOB_BYTES_MAX: usize = MATERIAL_BYTES_MAX + BLOB_OVERHEAD;
/// Nonce-derivation domain of sealed files (format version 1).
const BLOB_NONCE_DOMAIN: &[u8] = b"zhaowo-material-nonce-v1\0";
/// Associated-data domain of sealed files (format version 1).
const BLOB_AAD_DOMAIN: &[u8] = b"zhaowo-material-v1\0";

/// Which of a material's two files: the material itself or its thumbnail (bound into the associated data, so one
/// cannot stand in for the other).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobRole {
    Material,
    Thumbnail,
}

impl BlobRole {
    fn code(self) -> &'static str {
        match self {
            BlobRole::Material => "material",
            BlobRole::Thumbnail => "thumbnail",
        }
    }
}

fn blob_aad(case_id: &str, role: BlobRole) -> Vec<u8> {
    let mut aad = BLOB_AAD_DOMAIN.to_vec();
    aad.extend_from_slice(case_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(role.code().as_bytes());
    aad
}

/// The content address of a stored file: the lowercase hex SHA-256 of its bytes (the *sealed* bytes, so any node can
/// verify a transfer without the case key, and the address says nothing about the content to a node without it).
pub fn blob_hash(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Whether `text` has the shape of a [`blob_hash`] (64 lowercase hex digits): the only names the blob store makes.
pub fn is_blob_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Seals a material (or its thumbnail) of case `case_id` under the case key with XChaCha20-Poly1305: `zmb1` ‖ nonce ‖
/// ciphertext and tag. The nonce is derived from the command's fresh `secret` and the place (case, role), the
/// associated data binds case and role. The construction is the one of `seal` for private values, in bytes.
pub fn seal_blob(
    key: &crate::seal::CaseKey,
    secret: &[u8; 32],
    case_id: &str,
    role: BlobRole,
    plaintext: &[u8],
) -> Vec<u8> {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    use sha2::Digest;
    let aad = blob_aad(case_id, role);
    let digest = sha2::Sha256::new()
        .chain_update(BLOB_NONCE_DOMAIN)
        .chain_update(secret)
        .chain_update((aad.len() as u64).to_le_bytes())
        .chain_update(&aad)
        .finalize();
    let nonce = chacha20poly1305::XNonce::from_slice(&digest[..24]);
    let cipher = chacha20poly1305::XChaCha20Poly1305::new(key.as_bytes().into());
    let ciphertext =
        cipher.encrypt(nonce, Payload { msg: plaintext, aad: &aad }).expect("XChaCha20-Poly1305 seals any length");
    let mut out = Vec::with_capacity(BLOB_OVERHEAD + plaintext.len());
    out.extend_from_slice(BLOB_MAGIC);
    out.extend_from_slice(nonce);
    out.extend(ciphertext);
    out
}

/// Opens a sealed file of case `case_id` (see [`seal_blob`]); `WrongKey` for another key, case or role or a damaged
/// file, `NotSealed` for bytes that are not a sealed file.
pub fn open_blob(
    key: &crate::seal::CaseKey,
    case_id: &str,
    role: BlobRole,
    sealed: &[u8],
) -> Result<Vec<u8>, crate::seal::SealError> {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    if sealed.len() < BLOB_OVERHEAD || &sealed[..4] != BLOB_MAGIC {
        return Err(crate::seal::SealError::NotSealed);
    }
    let nonce = chacha20poly1305::XNonce::from_slice(&sealed[4..28]);
    let cipher = chacha20poly1305::XChaCha20Poly1305::new(key.as_bytes().into());
    cipher
        .decrypt(nonce, Payload { msg: &sealed[28..], aad: &blob_aad(case_id, role) })
        .map_err(|_| crate::seal::SealError::WrongKey)
}

/// A material sealed and ready to store: the files under their content addresses, and what the `MaterialAdded` event
/// names. Made by [`crate::CaseDoc::seal_material`].
#[derive(Clone)]
pub struct SealedMaterial {
    pub kind: MaterialType,
    pub blob: Vec<u8>,
    pub hash: String,
    pub thumbnail: Option<(Vec<u8>, String)>,
}

impl std::fmt::Debug for SealedMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedMaterial")
            .field("kind", &self.kind)
            .field("hash", &self.hash)
            .field("bytes", &self.blob.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_file_opens_only_with_its_key_case_and_role() {
        let key = crate::seal::CaseKey::derive(&[1; 32]);
        let plaintext = b"\xFF\xD8\xFF an image".to_vec();
        let sealed = seal_blob(&key, &[2; 32], "C1", BlobRole::Material, &plaintext);
        assert_eq!(sealed.len(), plaintext.len() + BLOB_OVERHEAD);
        assert!(is_blob_hash(&blob_hash(&sealed)) && !is_blob_hash("AB") && !is_blob_hash(&"G".repeat(64)));
        assert_eq!(open_blob(&key, "C1", BlobRole::Material, &sealed).unwrap(), plaintext);
        let other = crate::seal::CaseKey::derive(&[3; 32]);
        assert!(open_blob(&other, "C1", BlobRole::Material, &sealed).is_err(), "another key");
        assert!(open_blob(&key, "C2", BlobRole::Material, &sealed).is_err(), "another case");
        assert!(open_blob(&key, "C1", BlobRole::Thumbnail, &sealed).is_err(), "the other role");
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(open_blob(&key, "C1", BlobRole::Material, &flipped).is_err(), "a flipped bit");
        assert_eq!(open_blob(&key, "C1", BlobRole::Material, &sealed[..10]), Err(crate::seal::SealError::NotSealed));
        // A fresh secret gives another file (another nonce), so two uploads of one photo are two files.
        assert_ne!(sealed, seal_blob(&key, &[4; 32], "C1", BlobRole::Material, &plaintext));
    }

    fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
        chunk.extend_from_slice(kind);
        chunk.extend_from_slice(data);
        let crc = crc32(&chunk[4..]);
        chunk.extend_from_slice(&crc.to_be_bytes());
        chunk
    }

    #[test]
    fn types_are_judged_by_content_and_limits_are_named() {
        assert_eq!(clean(b""), Err(MaterialError::Empty));
        assert_eq!(clean(b"MZ\x90\x00 an exe named photo.jpg"), Err(MaterialError::UnknownType));
        let big = vec![0xFF; MATERIAL_BYTES_MAX + 1];
        assert!(matches!(clean(&big), Err(MaterialError::TooLarge { max: MATERIAL_BYTES_MAX, .. })));
        assert!(clean(b"%PDF-1.7\n1 0 obj\n").unwrap_err().to_string().contains("%%EOF"));
        assert_eq!(clean(b"%PDF-1.7\n%%EOF\n").unwrap().0, MaterialType::Pdf);
        assert!(MaterialError::UnknownType.zh().contains("JPEG"));
    }

    #[test]
    fn a_photo_keeps_its_orientation_and_nothing_else_of_its_exif() {
        // A phone's portrait photo: EXIF with the orientation (6: turn 90°) and a GPS IFD pointer, little-endian.
        let mut exif = b"Exif\0\0II\x2A\0\x08\0\0\0\x02\0".to_vec();
        exif.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0]);
        exif.extend_from_slice(&[0x25, 0x88, 4, 0, 1, 0, 0, 0, 0x26, 0, 0, 0]);
        exif.extend_from_slice(&[0, 0, 0, 0]);
        exif.extend_from_slice(b"GPS 30.6N 114.3E serial 123456");
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE1];
        jpeg.extend_from_slice(&((exif.len() + 2) as u16).to_be_bytes());
        jpeg.extend_from_slice(&exif);
        jpeg.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x02, 0x12, 0x34, 0xFF, 0xD9]);
        let (kind, cleaned) = clean(&jpeg).unwrap();
        assert_eq!(kind, MaterialType::Jpeg);
        assert!(!cleaned.windows(3).any(|w| w == b"GPS") && !cleaned.windows(6).any(|w| w == b"123456"));
        assert_eq!(cleaned[2..4], [0xFF, 0xE1], "the minimal EXIF segment follows SOI");
        assert_eq!(exif_orientation(&cleaned[6..6 + 32]), Some(6), "the orientation is kept");
        assert!(cleaned.len() <= jpeg.len());
        assert_eq!(clean(&cleaned).unwrap().1, cleaned, "cleaning again changes nothing");
        // Orientation 1 (upright) needs no segment at all.
        let mut upright = jpeg.clone();
        let at = upright.windows(12).position(|w| w == [0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0]).unwrap();
        upright[at + 8] = 1;
        assert!(!clean(&upright).unwrap().1.windows(4).any(|w| w == b"Exif"));
    }

    #[test]
    fn png_text_chunks_are_dropped_and_bad_checksums_refused() {
        let ihdr = png_chunk(b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0]);
        let text = png_chunk(b"tEXt", b"Author\0Li Jianguo 13812341234");
        let idat = png_chunk(b"IDAT", &[0x78, 0x9C, 0x63, 0x60, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01]);
        let iend = png_chunk(b"IEND", b"");
        let file = [PNG_SIGNATURE, &ihdr, &text, &idat, &iend].concat();
        let (kind, cleaned) = clean(&file).unwrap();
        assert_eq!(kind, MaterialType::Png);
        assert_eq!(cleaned, [PNG_SIGNATURE, &ihdr, &idat, &iend].concat());
        let mut flipped = file.clone();
        flipped[PNG_SIGNATURE.len() + 10] ^= 1;
        assert!(clean(&flipped).is_err(), "a flipped byte passed the checksum");
        assert!(clean(&file[..file.len() - 3]).is_err(), "a truncated file was accepted");
    }
}
