//! The upload parser (issue 16): a strict `multipart/form-data` decoder (RFC 7578 over RFC 2046) for the forms that
//! carry materials, from the desk and from the citizen pages.
//!
//! Strict means a body is either read exactly as a browser writes it or refused with a typed [`UploadError`] (and
//! its zh-CN sentence, [`UploadError::zh`]); nothing is guessed or replaced. Lines end with CRLF; every part has a
//! `Content-Disposition: form-data` with a `name`; names, text fields and file names are valid UTF-8 (refused, never
//! replaced); a file name is cut to its last path component (old Windows browsers send `C:\Users\…\x.jpg`) and
//! refused with control or invisible characters; a body without its closing delimiter is refused. A preamble before
//! the first delimiter and an epilogue after the last are ignored, as RFC 2046 says.
//!
//! Every count and size is checked against [`UploadLimits`] while the body is walked, never after, and each search
//! starts where the previous one ended (`memchr::memmem`), so a hostile body costs one linear pass. The
//! `upload_form` fuzz target checks that [`parse`] never panics and that what it returns holds the limits.
//!
//! Quoted parameter values follow what browsers send (the WHATWG HTML form encoding), not RFC 822 quoting: a
//! backslash is a plain character (it is the Windows path separator), and the value ends at the next `"` (browsers
//! write a `"` in a file name as `%22`, which is kept as it is). `filename*=UTF-8''…` (RFC 5987) is percent-decoded
//! and wins over `filename` (RFC 6266 §4.3).

use crate::materials::MATERIAL_BYTES_MAX;
use memchr::memmem;

/// RFC 2046 §5.1.1: a boundary is 1 to 70 characters.
pub const BOUNDARY_CHARS_MAX: usize = 70;
/// Files in one desk upload: a clerk scans a citizen's papers in one go (李先生's case needed six).
pub const UPLOAD_FILES_MAX: usize = 10;
/// Files in one citizen upload: a photo or two of the problem and a document; a citizen with more brings them to a
/// window, and a public form that takes 30 MiB per request is already a lot for the hall's uplink.
pub const UPLOAD_CITIZEN_FILES_MAX: usize = 3;
/// One file: the material limit itself, so the parser refuses early what `materials::clean` would refuse anyway.
pub const UPLOAD_FILE_BYTES_MAX: usize = MATERIAL_BYTES_MAX;
/// One text field (a CSRF token, a note, a material's title): 8 KiB is far above any of them.
pub const UPLOAD_FIELD_BYTES_MAX: usize = 8 * 1024;
/// Parts in one body, files and fields together: the files plus a handful of fields (token, case, notes).
pub const UPLOAD_PARTS_MAX: usize = 32;
/// Everything around the files in one body: part headers, delimiters and text fields
/// (`UPLOAD_PARTS_MAX` × (headers + a field) is under 1 MiB).
pub const UPLOAD_OVERHEAD_BYTES_MAX: usize = 1024 * 1024;
/// One part header line, CRLF excluded: a Content-Disposition with a 255-byte file name written twice (plain and
/// percent-encoded, three bytes per byte) fits; a browser's is under 300 bytes.
pub const UPLOAD_HEADER_LINE_BYTES_MAX: usize = 2048;
/// Header lines in one part: browsers send one or two (Content-Disposition, Content-Type).
pub const UPLOAD_HEADERS_MAX: usize = 8;
/// A field name: our forms use short ASCII names.
pub const UPLOAD_NAME_BYTES_MAX: usize = 128;
/// A file name after cutting the path: the common file-system limit (ext4, NTFS), in bytes of UTF-8.
pub const UPLOAD_FILE_NAME_BYTES_MAX: usize = 255;

const _: () = assert!(UPLOAD_CITIZEN_FILES_MAX <= UPLOAD_FILES_MAX);
const _: () = assert!(UPLOAD_FILES_MAX < UPLOAD_PARTS_MAX);
const _: () =
    assert!(UPLOAD_PARTS_MAX * (UPLOAD_HEADERS_MAX * UPLOAD_HEADER_LINE_BYTES_MAX) < UPLOAD_OVERHEAD_BYTES_MAX);
const _: () = assert!(UPLOAD_FILES_MAX * UPLOAD_FILE_BYTES_MAX + UPLOAD_OVERHEAD_BYTES_MAX <= u32::MAX as usize);

/// The limits of one upload. Built explicitly by the caller ([`UploadLimits::desk`], [`UploadLimits::citizen`]),
/// never by a hidden `Default`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// Parts, files and fields together.
    pub parts_max: usize,
    /// Parts that carry a file (a `filename` parameter, not the empty part of an unused file input).
    pub files_max: usize,
    /// Bytes of one file.
    pub file_bytes_max: usize,
    /// Bytes of one text field.
    pub field_bytes_max: usize,
    /// Bytes of the whole body, checked before anything else.
    pub body_bytes_max: usize,
}

impl UploadLimits {
    /// A clerk's upload at the desk.
    pub const fn desk() -> UploadLimits {
        UploadLimits {
            parts_max: UPLOAD_PARTS_MAX,
            files_max: UPLOAD_FILES_MAX,
            file_bytes_max: UPLOAD_FILE_BYTES_MAX,
            field_bytes_max: UPLOAD_FIELD_BYTES_MAX,
            body_bytes_max: UPLOAD_FILES_MAX * UPLOAD_FILE_BYTES_MAX + UPLOAD_OVERHEAD_BYTES_MAX,
        }
    }

    /// A citizen's upload on the public pages.
    pub const fn citizen() -> UploadLimits {
        UploadLimits {
            parts_max: UPLOAD_PARTS_MAX,
            files_max: UPLOAD_CITIZEN_FILES_MAX,
            file_bytes_max: UPLOAD_FILE_BYTES_MAX,
            field_bytes_max: UPLOAD_FIELD_BYTES_MAX,
            body_bytes_max: UPLOAD_CITIZEN_FILES_MAX * UPLOAD_FILE_BYTES_MAX + UPLOAD_OVERHEAD_BYTES_MAX,
        }
    }
}

/// One part of a form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The form field's name (valid UTF-8, not empty).
    pub name: String,
    /// The file name, cut to its last path component; `None` for a text field.
    pub file_name: Option<String>,
    /// The part's `Content-Type` as the browser sent it. Informational only: a material's type is judged by its
    /// content (`materials::sniff`).
    pub content_type: Option<String>,
    /// The bytes: a file's content, or a text field's value (then valid UTF-8).
    pub data: Vec<u8>,
}

impl Part {
    pub fn is_file(&self) -> bool {
        self.file_name.is_some()
    }

    /// A text field's value; `None` for a file. Text fields were checked to be UTF-8 when parsed.
    pub fn text(&self) -> Option<&str> {
        if self.is_file() { None } else { std::str::from_utf8(&self.data).ok() }
    }
}

/// Why an upload was refused. Messages name no value from the body (file names may be personal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    /// The request's content type is not `multipart/form-data`.
    #[error("the content type is not multipart/form-data")]
    NotMultipart,
    /// The content type has no `boundary` parameter, or has it twice.
    #[error("the content type has no single boundary parameter")]
    BoundaryMissing,
    /// The boundary is empty, longer than 70 characters or has characters RFC 2046 does not allow.
    #[error("the boundary is not 1 to {BOUNDARY_CHARS_MAX} characters allowed by RFC 2046")]
    BoundaryInvalid,
    /// The body is larger than the limit.
    #[error("the body is {bytes} bytes, the limit is {max}")]
    BodyTooLarge { bytes: usize, max: usize },
    /// No delimiter line starts the first part.
    #[error("the body has no opening boundary delimiter")]
    OpeningDelimiterMissing,
    /// The body ends before the closing delimiter (`--boundary--`): truncated.
    #[error("the body ends without the closing boundary delimiter")]
    ClosingDelimiterMissing,
    /// A delimiter is followed by something else than CRLF or `--`.
    #[error("a boundary delimiter is followed by other characters")]
    DelimiterMalformed,
    /// A part header line is longer than the limit.
    #[error("a part header line is longer than {max} bytes")]
    HeaderLineTooLong { max: usize },
    /// A part has more header lines than the limit.
    #[error("a part has more than {max} header lines")]
    TooManyHeaders { max: usize },
    /// A part header line is not `Name: value` with CRLF, valid UTF-8 and no control characters.
    #[error("malformed part header: {reason}")]
    HeaderMalformed { reason: &'static str },
    /// A part has no `Content-Disposition: form-data`, or has it twice, or its parameters do not parse.
    #[error("malformed content-disposition: {reason}")]
    DispositionInvalid { reason: &'static str },
    /// A part's disposition has no field name (or an empty or overlong one).
    #[error("a part has no usable field name")]
    NameMissing,
    /// More parts than the limit.
    #[error("more than {max} parts")]
    TooManyParts { max: usize },
    /// More files than the limit.
    #[error("more than {max} files")]
    TooManyFiles { max: usize },
    /// A file is larger than the limit.
    #[error("a file is {bytes} bytes, the limit is {max}")]
    FileTooLarge { bytes: usize, max: usize },
    /// A text field is larger than the limit.
    #[error("a text field is {bytes} bytes, the limit is {max}")]
    FieldTooLarge { bytes: usize, max: usize },
    /// A text field is not valid UTF-8.
    #[error("a text field is not valid UTF-8")]
    FieldNotUtf8,
    /// A file name is empty after cutting the path, too long, `.`/`..`, or has control or invisible characters.
    #[error("invalid file name: {reason}")]
    FileNameInvalid { reason: &'static str },
}

impl UploadError {
    /// The sentence a clerk or a citizen reads.
    pub fn zh(&self) -> String {
        match self {
            UploadError::TooManyFiles { max } => format!("最多上传 {max} 个文件。"),
            UploadError::FileTooLarge { max, .. } => {
                format!("单个文件不能超过 {} MB，请压缩或分页后再上传。", max / (1024 * 1024))
            }
            UploadError::BodyTooLarge { max, .. } => {
                format!("上传的内容合计不能超过 {} MB，请分几次上传。", max / (1024 * 1024))
            }
            UploadError::FieldTooLarge { .. } => "填写的内容过长，请删减后再提交。".to_owned(),
            UploadError::FieldNotUtf8 => "填写的内容含有无法识别的字符，请重新输入。".to_owned(),
            UploadError::FileNameInvalid { .. } => "文件名含有不允许的字符或过长，请改名后再上传。".to_owned(),
            UploadError::TooManyParts { .. } => "表单内容过多，请分几次提交。".to_owned(),
            UploadError::ClosingDelimiterMissing => "上传没有完成（内容不完整），请重新提交。".to_owned(),
            UploadError::NotMultipart
            | UploadError::BoundaryMissing
            | UploadError::BoundaryInvalid
            | UploadError::OpeningDelimiterMissing
            | UploadError::DelimiterMalformed
            | UploadError::HeaderLineTooLong { .. }
            | UploadError::TooManyHeaders { .. }
            | UploadError::HeaderMalformed { .. }
            | UploadError::DispositionInvalid { .. }
            | UploadError::NameMissing => "上传的表单格式不正确，请刷新页面后重新提交。".to_owned(),
        }
    }
}

/// The boundary of a `multipart/form-data` content type, quoted or not, checked against RFC 2046 (1–70 of
/// `DIGIT / ALPHA / '()+_,-./:=?` and space, not ending in a space). Other parameters (`charset`) are ignored.
pub fn boundary(content_type: &str) -> Result<&str, UploadError> {
    let mut params = content_type.split(';');
    let media_type = params.next().unwrap_or("").trim_matches([' ', '\t']);
    if !media_type.eq_ignore_ascii_case("multipart/form-data") {
        return Err(UploadError::NotMultipart);
    }
    let mut found = None;
    for param in params {
        let param = param.trim_matches([' ', '\t']);
        let Some((key, value)) = param.split_once('=') else { continue };
        if !key.trim_end_matches([' ', '\t']).eq_ignore_ascii_case("boundary") {
            continue;
        }
        if found.is_some() {
            return Err(UploadError::BoundaryMissing);
        }
        let value = value.trim_start_matches([' ', '\t']);
        let value = match value.strip_prefix('"') {
            Some(quoted) => quoted.strip_suffix('"').ok_or(UploadError::BoundaryInvalid)?,
            None => value,
        };
        found = Some(value);
    }
    let value = found.ok_or(UploadError::BoundaryMissing)?;
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&b);
    if value.is_empty() || value.len() > BOUNDARY_CHARS_MAX || value.ends_with(' ') || !value.bytes().all(allowed) {
        return Err(UploadError::BoundaryInvalid);
    }
    Ok(value)
}

/// Parses a `multipart/form-data` body into its parts, in order. A part with `filename=""` and no bytes (what a
/// browser sends for a file input left empty) is skipped: it is no file.
pub fn parse(content_type: &str, body: &[u8], limits: &UploadLimits) -> Result<Vec<Part>, UploadError> {
    let boundary = boundary(content_type)?;
    if body.len() > limits.body_bytes_max {
        return Err(UploadError::BodyTooLarge { bytes: body.len(), max: limits.body_bytes_max });
    }
    // "\r\n--boundary": the delimiter that ends a part. The first one may start the body without its CRLF.
    let delimiter = [b"\r\n--", boundary.as_bytes()].concat();
    let finder = memmem::Finder::new(&delimiter);
    let mut pos = if body.starts_with(&delimiter[2..]) {
        delimiter.len() - 2
    } else {
        finder.find(body).ok_or(UploadError::OpeningDelimiterMissing)? + delimiter.len()
    };
    let mut parts = Vec::new();
    let mut files = 0;
    let mut n_parts = 0;
    loop {
        // After a delimiter: `--` closes the body (anything after it is the epilogue), CRLF starts a part.
        let rest = &body[pos..];
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        if !rest.starts_with(b"\r\n") {
            return Err(if rest.is_empty() || rest == b"\r" || rest == b"-" {
                UploadError::ClosingDelimiterMissing
            } else {
                UploadError::DelimiterMalformed
            });
        }
        pos += 2;
        n_parts += 1;
        if n_parts > limits.parts_max {
            return Err(UploadError::TooManyParts { max: limits.parts_max });
        }
        let (headers, data_start) = part_headers(body, pos)?;
        let data_len = finder.find(&body[data_start..]).ok_or(UploadError::ClosingDelimiterMissing)?;
        let data = &body[data_start..data_start + data_len];
        pos = data_start + data_len + delimiter.len();
        match headers.file_name {
            Some(ref file_name) if file_name.is_empty() && data.is_empty() => continue,
            Some(file_name) => {
                files += 1;
                if files > limits.files_max {
                    return Err(UploadError::TooManyFiles { max: limits.files_max });
                }
                if data.len() > limits.file_bytes_max {
                    return Err(UploadError::FileTooLarge { bytes: data.len(), max: limits.file_bytes_max });
                }
                let file_name = checked_file_name(&file_name)?;
                parts.push(Part {
                    name: headers.name,
                    file_name: Some(file_name),
                    content_type: headers.content_type,
                    data: data.to_vec(),
                });
            }
            None => {
                if data.len() > limits.field_bytes_max {
                    return Err(UploadError::FieldTooLarge { bytes: data.len(), max: limits.field_bytes_max });
                }
                std::str::from_utf8(data).map_err(|_| UploadError::FieldNotUtf8)?;
                parts.push(Part {
                    name: headers.name,
                    file_name: None,
                    content_type: headers.content_type,
                    data: data.to_vec(),
                });
            }
        }
    }
}

/// What a part's headers say.
struct PartHeaders {
    name: String,
    file_name: Option<String>,
    content_type: Option<String>,
}

/// Reads a part's header lines from `pos` up to and including the empty line; returns them and where the data starts.
fn part_headers(body: &[u8], mut pos: usize) -> Result<(PartHeaders, usize), UploadError> {
    let mut disposition: Option<(String, Option<String>)> = None;
    let mut content_type = None;
    let mut n_headers = 0;
    loop {
        // Look for the line's LF only within the longest allowed line, so a body without line ends costs no more.
        let window = &body[pos..body.len().min(pos + UPLOAD_HEADER_LINE_BYTES_MAX + 2)];
        let Some(lf) = memchr::memchr(b'\n', window) else {
            return Err(if window.len() < UPLOAD_HEADER_LINE_BYTES_MAX + 2 {
                UploadError::ClosingDelimiterMissing
            } else {
                UploadError::HeaderLineTooLong { max: UPLOAD_HEADER_LINE_BYTES_MAX }
            });
        };
        let line = window[..lf].strip_suffix(b"\r").ok_or(UploadError::HeaderMalformed { reason: "bare LF" })?;
        pos += lf + 1;
        if line.is_empty() {
            break;
        }
        if line.len() > UPLOAD_HEADER_LINE_BYTES_MAX {
            return Err(UploadError::HeaderLineTooLong { max: UPLOAD_HEADER_LINE_BYTES_MAX });
        }
        n_headers += 1;
        if n_headers > UPLOAD_HEADERS_MAX {
            return Err(UploadError::TooManyHeaders { max: UPLOAD_HEADERS_MAX });
        }
        let line = std::str::from_utf8(line).map_err(|_| UploadError::HeaderMalformed { reason: "not UTF-8" })?;
        if line.chars().any(|c| c.is_control() && c != '\t') {
            return Err(UploadError::HeaderMalformed { reason: "control character" });
        }
        if line.starts_with([' ', '\t']) {
            return Err(UploadError::HeaderMalformed { reason: "folded line" });
        }
        let (key, value) = line.split_once(':').ok_or(UploadError::HeaderMalformed { reason: "no colon" })?;
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)) {
            return Err(UploadError::HeaderMalformed { reason: "invalid header name" });
        }
        let value = value.trim_matches([' ', '\t']);
        if key.eq_ignore_ascii_case("content-disposition") {
            if disposition.is_some() {
                return Err(UploadError::DispositionInvalid { reason: "repeated" });
            }
            disposition = Some(parse_disposition(value)?);
        } else if key.eq_ignore_ascii_case("content-type") {
            if content_type.is_some() {
                return Err(UploadError::HeaderMalformed { reason: "repeated content-type" });
            }
            content_type = Some(value.to_owned());
        } else if key.eq_ignore_ascii_case("content-transfer-encoding") {
            // RFC 7578 §4.7: deprecated; only the identity encodings leave the bytes as they are.
            if !["binary", "8bit", "7bit"].iter().any(|identity| value.eq_ignore_ascii_case(identity)) {
                return Err(UploadError::HeaderMalformed { reason: "content-transfer-encoding" });
            }
        }
        // Other headers are ignored (RFC 7578 §4.8).
    }
    let (name, file_name) = disposition.ok_or(UploadError::DispositionInvalid { reason: "missing" })?;
    Ok((PartHeaders { name, file_name, content_type }, pos))
}

/// `form-data; name="…"; filename="…"; filename*=UTF-8''…` → the name and the file name as sent (path not yet cut).
fn parse_disposition(value: &str) -> Result<(String, Option<String>), UploadError> {
    let invalid = |reason| UploadError::DispositionInvalid { reason };
    let (kind, mut rest) = match value.find(';') {
        Some(at) => (&value[..at], &value[at..]),
        None => (value, ""),
    };
    if !kind.trim_matches([' ', '\t']).eq_ignore_ascii_case("form-data") {
        return Err(invalid("not form-data"));
    }
    let (mut name, mut file_name, mut file_name_ext) = (None, None, None);
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        if rest.is_empty() {
            break;
        }
        rest = rest.strip_prefix(';').ok_or(invalid("expected ;"))?.trim_start_matches([' ', '\t']);
        if rest.is_empty() {
            break; // A trailing `;` is harmless.
        }
        let eq = rest.find('=').ok_or(invalid("parameter without value"))?;
        let key = rest[..eq].trim_end_matches([' ', '\t']);
        rest = rest[eq + 1..].trim_start_matches([' ', '\t']);
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').ok_or(invalid("unterminated quoted value"))?;
            value = &quoted[..end];
            rest = &quoted[end + 1..];
        } else {
            let end = rest.find([';', ' ', '\t']).unwrap_or(rest.len());
            value = &rest[..end];
            rest = &rest[end..];
            if value.is_empty() {
                return Err(invalid("empty parameter value"));
            }
        }
        let slot = if key.eq_ignore_ascii_case("name") {
            &mut name
        } else if key.eq_ignore_ascii_case("filename") {
            &mut file_name
        } else if key.eq_ignore_ascii_case("filename*") {
            &mut file_name_ext
        } else {
            continue; // RFC 7578: unknown parameters are ignored.
        };
        if slot.replace(value).is_some() {
            return Err(invalid("repeated parameter"));
        }
    }
    let name = name.ok_or(UploadError::NameMissing)?;
    if name.is_empty() || name.len() > UPLOAD_NAME_BYTES_MAX {
        return Err(UploadError::NameMissing);
    }
    let file_name = match file_name_ext {
        Some(extended) => Some(decode_ext_value(extended)?),
        None => file_name.map(str::to_owned),
    };
    Ok((name.to_owned(), file_name))
}

/// RFC 5987 `ext-value`: `UTF-8'language'percent-encoded`, only UTF-8, decoded strictly.
fn decode_ext_value(value: &str) -> Result<String, UploadError> {
    let invalid = UploadError::FileNameInvalid { reason: "filename* is not UTF-8''percent-encoded" };
    let mut pieces = value.splitn(3, '\'');
    let (Some(charset), Some(_language), Some(encoded)) = (pieces.next(), pieces.next(), pieces.next()) else {
        return Err(invalid);
    };
    if !charset.eq_ignore_ascii_case("utf-8") {
        return Err(invalid);
    }
    let attr_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~%".contains(&b);
    if !encoded.bytes().all(attr_char) {
        return Err(invalid);
    }
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).filter(|hex| hex.iter().all(u8::is_ascii_hexdigit));
            let hex = hex.and_then(|hex| std::str::from_utf8(hex).ok()).ok_or(invalid.clone())?;
            decoded.push(u8::from_str_radix(hex, 16).map_err(|_| invalid.clone())?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| invalid)
}

/// The last path component of a sent file name, checked.
fn checked_file_name(sent: &str) -> Result<String, UploadError> {
    let invalid = |reason| UploadError::FileNameInvalid { reason };
    let base = sent.rsplit(['/', '\\']).next().unwrap_or(sent);
    if base.is_empty() || base == "." || base == ".." {
        return Err(invalid("empty"));
    }
    if base.len() > UPLOAD_FILE_NAME_BYTES_MAX {
        return Err(invalid("too long"));
    }
    if base.chars().any(char::is_control) {
        return Err(invalid("control character"));
    }
    // Bidi overrides make `photo\u{202E}gpj.exe` read as `photoexe.jpg`: the same list as public text.
    if crate::public_text::hidden_character(base).is_some() {
        return Err(invalid("invisible character"));
    }
    Ok(base.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROMIUM: &str = "multipart/form-data; boundary=----WebKitFormBoundaryq3kY8Lz7xGm1RtVb";

    /// A body as Chromium writes it for the desk's upload form: a CSRF token, two photos, a note in Chinese and an
    /// unused file input, with a preamble and an epilogue a proxy might add.
    fn browser_body() -> Vec<u8> {
        let b = "------WebKitFormBoundaryq3kY8Lz7xGm1RtVb";
        let mut body = Vec::new();
        body.extend_from_slice(b"preamble ignored\r\n");
        body.extend_from_slice(
            format!("{b}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\nt0k3n\r\n").as_bytes(),
        );
        body.extend_from_slice(
            format!("{b}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"IMG_0001.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(b"\xFF\xD8\xFF\xE0\r\n--not-the-boundary\r\n\x00\xFF\xD9");
        body.extend_from_slice(
            format!("\r\n{b}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"C:\\fakepath\\身份证 扫描.png\"\r\nContent-Type: image/png\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(b"\x89PNG\r\n\x1a\n");
        body.extend_from_slice(
            format!("\r\n{b}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(
            format!("\r\n{b}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n门口照片\r\n第二行").as_bytes(),
        );
        body.extend_from_slice(format!("\r\n{b}--\r\nepilogue ignored").as_bytes());
        body
    }

    /// One part with the given header lines and data, closed.
    fn one_part(headers: &str, data: &[u8]) -> Vec<u8> {
        let mut body = format!("--XyZ\r\n{headers}\r\n\r\n").into_bytes();
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n--XyZ--\r\n");
        body
    }

    fn parse_one(headers: &str, data: &[u8]) -> Result<Vec<Part>, UploadError> {
        parse("multipart/form-data; boundary=XyZ", &one_part(headers, data), &UploadLimits::desk())
    }

    fn file_part(name: &str, file_name: &str, data: &[u8]) -> Vec<u8> {
        let mut part =
            format!("--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file_name}\"\r\n\r\n")
                .into_bytes();
        part.extend_from_slice(data);
        part.extend_from_slice(b"\r\n");
        part
    }

    #[test]
    fn a_chromium_body_gives_its_fields_and_files_in_order() {
        let parts = parse(CHROMIUM, &browser_body(), &UploadLimits::desk()).unwrap();
        assert_eq!(parts.len(), 4, "the empty file input is skipped");
        assert_eq!((parts[0].name.as_str(), parts[0].text()), ("csrf", Some("t0k3n")));
        assert_eq!(parts[1].file_name.as_deref(), Some("IMG_0001.jpg"));
        assert_eq!(parts[1].content_type.as_deref(), Some("image/jpeg"));
        assert_eq!(parts[1].data, b"\xFF\xD8\xFF\xE0\r\n--not-the-boundary\r\n\x00\xFF\xD9");
        assert_eq!(parts[1].text(), None);
        assert_eq!(parts[2].file_name.as_deref(), Some("身份证 扫描.png"), "the fake path is cut");
        assert_eq!(parts[2].data, b"\x89PNG\r\n\x1a\n");
        assert_eq!((parts[3].name.as_str(), parts[3].text()), ("note", Some("门口照片\r\n第二行")));
    }

    #[test]
    fn boundaries_quoted_or_not_within_rfc_2046() {
        assert_eq!(boundary(CHROMIUM), Ok("----WebKitFormBoundaryq3kY8Lz7xGm1RtVb"));
        assert_eq!(boundary("Multipart/Form-Data; charset=utf-8; BOUNDARY=\"a b:c\""), Ok("a b:c"));
        assert_eq!(boundary("multipart/form-data;boundary=x"), Ok("x"));
        let seventy = "b".repeat(70);
        assert_eq!(boundary(&format!("multipart/form-data; boundary={seventy}")), Ok(seventy.as_str()));
        let refused = [
            ("application/x-www-form-urlencoded", UploadError::NotMultipart),
            ("multipart/mixed; boundary=x", UploadError::NotMultipart),
            ("multipart/form-data", UploadError::BoundaryMissing),
            ("multipart/form-data; boundary=a; boundary=b", UploadError::BoundaryMissing),
            ("multipart/form-data; boundary=", UploadError::BoundaryInvalid),
            ("multipart/form-data; boundary=\"\"", UploadError::BoundaryInvalid),
            ("multipart/form-data; boundary=\"abc", UploadError::BoundaryInvalid),
            ("multipart/form-data; boundary=\"ends \"", UploadError::BoundaryInvalid),
            ("multipart/form-data; boundary=a\"b", UploadError::BoundaryInvalid),
            ("multipart/form-data; boundary=边界", UploadError::BoundaryInvalid),
        ];
        for (content_type, error) in refused {
            assert_eq!(boundary(content_type), Err(error), "{content_type}");
        }
        let seventy_one = "b".repeat(71);
        assert_eq!(
            boundary(&format!("multipart/form-data; boundary={seventy_one}")),
            Err(UploadError::BoundaryInvalid)
        );
    }

    #[test]
    fn file_names_are_cut_to_their_last_component_and_decoded() {
        let name = |disposition: &str| parse_one(disposition, b"x").map(|parts| parts[0].file_name.clone().unwrap());
        assert_eq!(name("Content-Disposition: form-data; name=f; filename=\"/home/u/a.pdf\"").unwrap(), "a.pdf");
        assert_eq!(
            name("content-disposition: FORM-DATA; name=\"f\"; filename=\"C:\\Users\\王\\b.jpg\"").unwrap(),
            "b.jpg"
        );
        // RFC 5987 wins over the plain parameter (RFC 6266 §4.3).
        let ext = "Content-Disposition: form-data; name=\"f\"; filename=\"fallback.jpg\"; filename*=UTF-8''%E6%8A%A5%E5%91%8A.pdf";
        assert_eq!(name(ext).unwrap(), "报告.pdf");
        let refused = [
            "Content-Disposition: form-data; name=\"f\"; filename=\"C:\\fakepath\\\"",
            "Content-Disposition: form-data; name=\"f\"; filename=\"..\"",
            "Content-Disposition: form-data; name=\"f\"; filename*=UTF-8''a%0Ab.jpg",
            "Content-Disposition: form-data; name=\"f\"; filename*=UTF-8''%FF.jpg",
            "Content-Disposition: form-data; name=\"f\"; filename*=UTF-8''%E6%8A",
            "Content-Disposition: form-data; name=\"f\"; filename*=UTF-8''a%2",
            "Content-Disposition: form-data; name=\"f\"; filename*=GBK''%B1%A8.pdf",
            "Content-Disposition: form-data; name=\"f\"; filename=\"photo\u{202E}gpj.exe\"",
        ];
        for disposition in refused {
            assert!(matches!(name(disposition), Err(UploadError::FileNameInvalid { .. })), "{disposition}");
        }
        let long = format!("Content-Disposition: form-data; name=\"f\"; filename=\"{}.jpg\"", "长".repeat(90));
        assert_eq!(name(&long), Err(UploadError::FileNameInvalid { reason: "too long" }));
    }

    #[test]
    fn each_limit_is_refused_with_its_number() {
        let citizen = UploadLimits::citizen();
        let mut body = Vec::new();
        for i in 0..4 {
            body.extend_from_slice(&file_part("files", &format!("{i}.jpg"), b"data"));
        }
        body.extend_from_slice(b"--XyZ--");
        let error = parse("multipart/form-data; boundary=XyZ", &body, &citizen).unwrap_err();
        assert_eq!(error, UploadError::TooManyFiles { max: 3 });
        assert_eq!(error.zh(), "最多上传 3 个文件。");
        assert_eq!(parse("multipart/form-data; boundary=XyZ", &body, &UploadLimits::desk()).unwrap().len(), 4);

        let small =
            UploadLimits { parts_max: 2, files_max: 2, file_bytes_max: 4, field_bytes_max: 3, body_bytes_max: 1000 };
        let parse_small = |body: &[u8]| parse("multipart/form-data; boundary=XyZ", body, &small);
        assert_eq!(parse_small(&body), Err(UploadError::TooManyParts { max: 2 }));
        let big = [file_part("f", "a.jpg", b"12345"), b"--XyZ--".to_vec()].concat();
        assert_eq!(parse_small(&big), Err(UploadError::FileTooLarge { bytes: 5, max: 4 }));
        assert_eq!(
            parse_small(&one_part("Content-Disposition: form-data; name=n", b"abcd")),
            Err(UploadError::FieldTooLarge { bytes: 4, max: 3 })
        );
        assert_eq!(parse_small(&[b'x'; 1001]), Err(UploadError::BodyTooLarge { bytes: 1001, max: 1000 }));
        assert_eq!(
            UploadError::FileTooLarge { bytes: 0, max: UPLOAD_FILE_BYTES_MAX }.zh(),
            "单个文件不能超过 10 MB，请压缩或分页后再上传。"
        );
    }

    #[test]
    fn each_malformed_body_is_refused() {
        let ct = "multipart/form-data; boundary=XyZ";
        let desk = UploadLimits::desk();
        let disposition = "Content-Disposition: form-data; name=\"n\"";
        let cases: Vec<(Vec<u8>, UploadError)> = vec![
            (b"no delimiter at all".to_vec(), UploadError::OpeningDelimiterMissing),
            (
                b"--XyZ\r\nContent-Disposition: form-data; name=n\r\n\r\nvalue".to_vec(),
                UploadError::ClosingDelimiterMissing,
            ),
            (
                b"--XyZ\r\nContent-Disposition: form-data; name=n\r\n\r\nv\r\n--XyZ".to_vec(),
                UploadError::ClosingDelimiterMissing,
            ),
            (b"--XyZ\r\nContent-Disposition: form-data; name=n".to_vec(), UploadError::ClosingDelimiterMissing),
            (b"--XyZ".to_vec(), UploadError::ClosingDelimiterMissing),
            (b"--XyZX\r\n".to_vec(), UploadError::DelimiterMalformed),
            (b"--XyZ\nContent-Disposition: form-data; name=n\n\nv\n--XyZ--".to_vec(), UploadError::DelimiterMalformed),
            (
                b"--XyZ\r\nContent-Disposition: form-data; name=n\n\r\nv\r\n--XyZ--".to_vec(),
                UploadError::HeaderMalformed { reason: "bare LF" },
            ),
            (one_part("Content-Type: text/plain", b"v"), UploadError::DispositionInvalid { reason: "missing" }),
            (
                one_part("Content-Disposition: attachment; name=n", b"v"),
                UploadError::DispositionInvalid { reason: "not form-data" },
            ),
            (
                one_part(&format!("{disposition}\r\n{disposition}"), b"v"),
                UploadError::DispositionInvalid { reason: "repeated" },
            ),
            (
                one_part("Content-Disposition: form-data; name=\"a\"; name=\"b\"", b"v"),
                UploadError::DispositionInvalid { reason: "repeated parameter" },
            ),
            (
                one_part("Content-Disposition: form-data; name=\"a", b"v"),
                UploadError::DispositionInvalid { reason: "unterminated quoted value" },
            ),
            (one_part("Content-Disposition: form-data; filename=\"a.jpg\"", b"v"), UploadError::NameMissing),
            (one_part("Content-Disposition: form-data; name=\"\"", b"v"), UploadError::NameMissing),
            (
                one_part(&format!("{disposition}\r\n folded"), b"v"),
                UploadError::HeaderMalformed { reason: "folded line" },
            ),
            (
                one_part(&format!("{disposition}\r\nX-No-Colon"), b"v"),
                UploadError::HeaderMalformed { reason: "no colon" },
            ),
            (
                one_part(&format!("{disposition}\r\nContent-Transfer-Encoding: base64"), b"v"),
                UploadError::HeaderMalformed { reason: "content-transfer-encoding" },
            ),
            (one_part(disposition, b"caf\xE9"), UploadError::FieldNotUtf8),
            (
                one_part(&format!("{disposition}\r\nX: {}", "a".repeat(UPLOAD_HEADER_LINE_BYTES_MAX)), b"v"),
                UploadError::HeaderLineTooLong { max: UPLOAD_HEADER_LINE_BYTES_MAX },
            ),
            (
                one_part(&format!("{disposition}{}", "\r\nX: y".repeat(UPLOAD_HEADERS_MAX)), b"v"),
                UploadError::TooManyHeaders { max: UPLOAD_HEADERS_MAX },
            ),
        ];
        for (body, error) in cases {
            assert_eq!(parse(ct, &body, &desk), Err(error.clone()), "{}", String::from_utf8_lossy(&body));
            assert!(!error.zh().is_empty());
        }
        // A header value that is not UTF-8 (a GBK file name) is refused, not replaced.
        let mut gbk =
            b"--XyZ\r\nContent-Disposition: form-data; name=f; filename=\"\xB1\xA8.pdf\"\r\n\r\nx\r\n--XyZ--".to_vec();
        assert_eq!(parse(ct, &gbk, &desk), Err(UploadError::HeaderMalformed { reason: "not UTF-8" }));
        gbk.truncate(10);
        assert_eq!(parse(ct, &gbk, &desk), Err(UploadError::ClosingDelimiterMissing));
        assert_eq!(parse("text/plain", b"", &desk), Err(UploadError::NotMultipart));
    }

    #[test]
    fn an_empty_form_and_a_body_without_preamble_parse() {
        let ct = "multipart/form-data; boundary=XyZ";
        assert_eq!(parse(ct, b"--XyZ--", &UploadLimits::desk()), Ok(vec![]));
        assert_eq!(parse(ct, b"junk\r\n--XyZ--\r\n", &UploadLimits::desk()), Ok(vec![]));
        let parts = parse_one("Content-Disposition: form-data; name=n", b"").unwrap();
        assert_eq!(parts[0].text(), Some(""));
    }

    #[test]
    fn a_large_body_of_near_delimiters_is_one_linear_pass() {
        // 8 MiB of "\r\n--XyZ" prefixes that never complete the delimiter: found or refused in one pass.
        let mut data = Vec::new();
        while data.len() < 8 * 1024 * 1024 {
            data.extend_from_slice(b"\r\n--Xy\r\n-");
        }
        let body = [file_part("f", "a.pdf", &data), b"--XyZ--".to_vec()].concat();
        let parts = parse("multipart/form-data; boundary=XyZ", &body, &UploadLimits::desk()).unwrap();
        assert_eq!(parts[0].data, data);
        let headers_without_end = [b"--XyZ\r\n".as_slice(), &[b'a'; 1 << 20]].concat();
        assert_eq!(
            parse("multipart/form-data; boundary=XyZ", &headers_without_end, &UploadLimits::desk()),
            Err(UploadError::HeaderLineTooLong { max: UPLOAD_HEADER_LINE_BYTES_MAX })
        );
    }
}
