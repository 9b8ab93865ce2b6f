//! Thumbnails of materials (issue 16): a small JPEG the desk shows in a case's material list, made from a JPEG, PNG or
//! WebP file by the `image` crate (pure Rust, memory-safe on hostile input).
//!
//! Uploaded files are hostile input, so the decoder runs under limits: a header declaring a side beyond
//! [`THUMBNAIL_SOURCE_SIDE_PX_MAX`] or a picture needing more than [`THUMBNAIL_DECODE_BYTES_MAX`] is refused from its
//! header, before the pixel buffer is allocated. The thumbnail is a fresh JPEG encode of the scaled pixels, so it
//! carries no metadata by construction (no EXIF, no GPS, no ICC profile). A PDF has no thumbnail (no renderer in the
//! node): [`thumbnail`] returns `Ok(None)` and the desk shows an icon.

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use std::io::Cursor;
use zhaowo_crdt::materials::MaterialType;

/// The longest side of a thumbnail: a column of the desk's material list, sharp on a 2× screen at 120 CSS px.
pub const THUMBNAIL_SIDE_PX: u32 = 240;
/// JPEG quality of a thumbnail: small files (10–20 KB) without visible blocks at this size.
pub const THUMBNAIL_JPEG_QUALITY: u8 = 75;
/// The longest side of a source picture: a 100 MP camera is 12,000 px wide; phones are 4,000–8,000 px and a 300 dpi
/// A3 scan is 5,000 px. A larger declared side is a crafted file.
pub const THUMBNAIL_SOURCE_SIDE_PX_MAX: u32 = 12_000;
/// The decoder's allocation: 256 MiB holds a 64 MP RGBA picture (a 48 MP phone photo decodes to 144 MiB of RGB);
/// two uploads decoding at once stay well inside a window PC's memory.
pub const THUMBNAIL_DECODE_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// Why no thumbnail was made. The material itself is unaffected (it was accepted by `materials::clean`).
#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    /// The header declares a picture beyond the decoder limits; nothing was decoded.
    #[error(
        "the picture is beyond the decoder limits ({THUMBNAIL_SOURCE_SIDE_PX_MAX} px a side, {THUMBNAIL_DECODE_BYTES_MAX} bytes)"
    )]
    TooLarge,
    /// The file does not decode (truncated, damaged, or not of its type).
    #[error("the picture does not decode")]
    Decode(#[source] image::ImageError),
    /// The JPEG encoder failed (not expected for an in-memory buffer).
    #[error("the thumbnail does not encode")]
    Encode(#[source] image::ImageError),
}

/// The decoder limits of a source picture.
fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(THUMBNAIL_SOURCE_SIDE_PX_MAX);
    limits.max_image_height = Some(THUMBNAIL_SOURCE_SIDE_PX_MAX);
    limits.max_alloc = Some(THUMBNAIL_DECODE_BYTES_MAX);
    limits
}

fn decode_error(error: image::ImageError) -> ThumbnailError {
    match error {
        image::ImageError::Limits(_) => ThumbnailError::TooLarge,
        other => ThumbnailError::Decode(other),
    }
}

/// A JPEG of at most [`THUMBNAIL_SIDE_PX`] a side (aspect kept, EXIF orientation applied when the file still has
/// it, transparency on white) for a JPEG, PNG or WebP material; `Ok(None)` for a PDF.
pub fn thumbnail(kind: MaterialType, bytes: &[u8]) -> Result<Option<Vec<u8>>, ThumbnailError> {
    let format = match kind {
        MaterialType::Jpeg => ImageFormat::Jpeg,
        MaterialType::Png => ImageFormat::Png,
        MaterialType::Webp => ImageFormat::WebP,
        MaterialType::Pdf => return Ok(None),
    };
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits());
    // The decoder reads the header only; its dimensions are checked against the limits there.
    let mut decoder = reader.into_decoder().map_err(decode_error)?;
    // `ImageReader::decode` checks the output buffer against `max_alloc`; going through the decoder (to read the
    // orientation) means checking it here, before `from_decoder` allocates it.
    if decoder.total_bytes() > THUMBNAIL_DECODE_BYTES_MAX {
        return Err(ThumbnailError::TooLarge);
    }
    let orientation = decoder.orientation().map_err(decode_error)?;
    let mut picture = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    picture.apply_orientation(orientation);
    // `DynamicImage::thumbnail` also enlarges; a small picture is re-encoded at its own size.
    let small = if picture.width() <= THUMBNAIL_SIDE_PX && picture.height() <= THUMBNAIL_SIDE_PX {
        picture
    } else {
        picture.thumbnail(THUMBNAIL_SIDE_PX, THUMBNAIL_SIDE_PX)
    };
    let rgb = if small.color().has_alpha() { on_white(&small) } else { small.to_rgb8() };
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, THUMBNAIL_JPEG_QUALITY)
        .encode_image(&rgb)
        .map_err(ThumbnailError::Encode)?;
    Ok(Some(out))
}

/// Transparent pixels over white (the desk's background), since JPEG has no alpha; `to_rgb8` alone would show the
/// hidden colour of transparent pixels, often black.
fn on_white(picture: &DynamicImage) -> image::RgbImage {
    let rgba = picture.to_rgba8();
    image::RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        let over = |c: u8| ((u16::from(c) * u16::from(a) + 255 * (255 - u16::from(a)) + 127) / 255) as u8;
        image::Rgb([over(r), over(g), over(b)])
    })
}

#[cfg(test)]
#[allow(clippy::print_stdout)] // The timing test prints its figure.
mod tests {
    use super::*;
    use std::path::Path;

    fn seed(name: &str) -> Vec<u8> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crdt/fuzz/seeds/material_file");
        std::fs::read(dir.join(name)).unwrap()
    }

    /// A gradient picture of the given size, so the encoders have something to compress.
    fn picture(width: u32, height: u32) -> image::RgbImage {
        image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
        })
    }

    fn encode(picture: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        picture.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    /// The thumbnail is a JPEG within 240×240 whose longer side is 240 (or the source's, if smaller), with no
    /// metadata segment (only the JFIF header the encoder writes).
    fn check_thumbnail(kind: MaterialType, bytes: &[u8], source: (u32, u32)) -> (u32, u32) {
        let out = thumbnail(kind, bytes).unwrap().expect("an image has a thumbnail");
        assert_eq!(zhaowo_crdt::materials::sniff(&out), Some(MaterialType::Jpeg));
        let decoded = image::load_from_memory_with_format(&out, ImageFormat::Jpeg).unwrap();
        let (w, h) = (decoded.width(), decoded.height());
        assert!(w <= THUMBNAIL_SIDE_PX && h <= THUMBNAIL_SIDE_PX, "{w}×{h}");
        assert_eq!(w.max(h), source.0.max(source.1).min(THUMBNAIL_SIDE_PX), "{w}×{h} from {source:?}");
        // The aspect ratio is kept to within a pixel of rounding.
        let expected_h = f64::from(w) * f64::from(source.1) / f64::from(source.0);
        assert!((expected_h - f64::from(h)).abs() <= 1.0, "{w}×{h} from {source:?}");
        // No APP1 (EXIF/XMP), APP2 (ICC) or COM segment in the thumbnail.
        let (_, cleaned) = zhaowo_crdt::materials::clean(&out).unwrap();
        assert_eq!(cleaned, out, "the thumbnail carries metadata");
        (w, h)
    }

    #[test]
    fn seed_photos_get_small_clean_jpeg_thumbnails() {
        for (name, kind) in [
            ("gps-photo.jpg", MaterialType::Jpeg),
            ("gps-photo.webp", MaterialType::Webp),
            ("text.png", MaterialType::Png),
        ] {
            let bytes = seed(name);
            let source = image::load_from_memory(&bytes).unwrap();
            let (w, h) = check_thumbnail(kind, &bytes, (source.width(), source.height()));
            println!("thumbnail {name}: {}×{} → {w}×{h}", source.width(), source.height());
        }
        assert!(thumbnail(MaterialType::Pdf, &seed("scan.pdf")).unwrap().is_none(), "no thumbnail for a PDF");
    }

    #[test]
    fn generated_pictures_of_every_type_and_shape_are_scaled_to_fit() {
        for (width, height) in [(1200, 800), (300, 1000), (100, 50), (240, 240), (1, 1)] {
            let rgb = DynamicImage::ImageRgb8(picture(width, height));
            check_thumbnail(MaterialType::Jpeg, &encode(&rgb, ImageFormat::Jpeg), (width, height));
            check_thumbnail(MaterialType::Png, &encode(&rgb, ImageFormat::Png), (width, height));
            check_thumbnail(MaterialType::Webp, &encode(&rgb, ImageFormat::WebP), (width, height));
        }
        // A transparent PNG is shown over white, not black.
        let clear = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(64, 64, image::Rgba([0, 0, 0, 0])));
        let out = thumbnail(MaterialType::Png, &encode(&clear, ImageFormat::Png)).unwrap().unwrap();
        let pixel = image::load_from_memory(&out).unwrap().to_rgb8().get_pixel(32, 32).0;
        assert!(pixel.iter().all(|&c| c > 245), "{pixel:?}");
    }

    /// A PNG chunk with its length and CRC.
    fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let body = [kind.as_slice(), data].concat();
        let crc = body.iter().fold(0xFFFF_FFFF_u32, |mut crc, &byte| {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
            crc
        }) ^ 0xFFFF_FFFF;
        let len = u32::try_from(data.len()).unwrap();
        [len.to_be_bytes().as_slice(), &body, &crc.to_be_bytes()].concat()
    }

    /// A PNG declaring the given size (RGBA8) with a few bytes of image data where gigabytes would be due.
    fn png_header(width: u32, height: u32) -> Vec<u8> {
        let ihdr = [width.to_be_bytes().as_slice(), &height.to_be_bytes(), &[8, 6, 0, 0, 0]].concat();
        let idat = [0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01];
        [
            b"\x89PNG\r\n\x1a\n".as_slice(),
            &png_chunk(b"IHDR", &ihdr),
            &png_chunk(b"IDAT", &idat),
            &png_chunk(b"IEND", &[]),
        ]
        .concat()
    }

    /// A real 16×16 JPEG whose SOF header is rewritten to declare another size.
    fn jpeg_declaring(width: u16, height: u16) -> Vec<u8> {
        let mut jpeg = encode(&DynamicImage::ImageRgb8(picture(16, 16)), ImageFormat::Jpeg);
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline SOF0");
        jpeg[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
        jpeg[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
        jpeg
    }

    #[test]
    fn a_huge_declared_picture_is_refused_from_its_header() {
        let started = std::time::Instant::now();
        // Beyond the side limit (60,000 px), and within it but beyond the allocation limit (12,000² RGBA = 549 MiB).
        for png in [png_header(60_000, 60_000), png_header(12_000, 12_000), png_header(100_000, 1)] {
            let result = thumbnail(MaterialType::Png, &png);
            assert!(matches!(result, Err(ThumbnailError::TooLarge)), "{result:?}");
        }
        for jpeg in [jpeg_declaring(65_000, 65_000), jpeg_declaring(12_000, 12_000)] {
            let result = thumbnail(MaterialType::Jpeg, &jpeg);
            assert!(matches!(result, Err(ThumbnailError::TooLarge)), "{result:?}");
        }
        // Allocating and decoding even one of these would take seconds; refusing from the header takes microseconds.
        println!("five huge declared pictures refused in {:?}", started.elapsed());
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn truncated_and_mistyped_files_are_errors_not_panics() {
        let files = [
            (MaterialType::Jpeg, seed("gps-photo.jpg")),
            (MaterialType::Webp, seed("gps-photo.webp")),
            (MaterialType::Png, seed("text.png")),
        ];
        for (kind, bytes) in &files {
            let mut errors = 0;
            for cut in [0, 1, 8, 20, bytes.len() / 3, bytes.len() / 2, bytes.len() - 10] {
                // Some decoders fill a cut-off tail with grey (a partly downloaded photo still shows); an error or a
                // thumbnail are both fine, a panic is not.
                if thumbnail(*kind, &bytes[..cut]).is_err() {
                    errors += 1;
                }
            }
            assert!(errors >= 4, "{kind:?}: {errors}");
        }
        // A file of one type handed in as another is a decode error.
        assert!(matches!(thumbnail(MaterialType::Png, &files[0].1), Err(ThumbnailError::Decode(_))));
        assert!(matches!(thumbnail(MaterialType::Jpeg, &files[2].1), Err(ThumbnailError::Decode(_))));
    }

    /// The figure the desk's upload path pays per photo: a 4000×3000 JPEG (a 12 MP phone photo) to a thumbnail.
    #[test]
    fn thumbnail_of_a_12_mp_photo_time() {
        let photo = encode(&DynamicImage::ImageRgb8(picture(4000, 3000)), ImageFormat::Jpeg);
        let mut times = Vec::new();
        let mut out = Vec::new();
        for _ in 0..3 {
            let started = std::time::Instant::now();
            out = thumbnail(MaterialType::Jpeg, &photo).unwrap().unwrap();
            times.push(started.elapsed());
        }
        times.sort();
        println!(
            "thumbnail of a 4000×3000 JPEG ({} KiB): median {:?} (min {:?}, max {:?}), thumbnail {} bytes",
            photo.len() / 1024,
            times[1],
            times[0],
            times[2],
            out.len()
        );
        let decoded = image::load_from_memory(&out).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (240, 180));
    }
}
