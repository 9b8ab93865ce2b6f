//! Public text: what anyone may read (the summary on the citizen lookup page and in Open311) must carry no phone
//! number, id-card number or e-mail address, however it is written, and no invisible characters.
//!
//! A disguised number is found after normalising the text: NFKC (full-width `１３８`, circled `①③⑧`, the full-width
//! `＠` and `．`), Chinese digit words (`一三八`, `幺`, the financial `壹贰叁`), letter look-alikes (`l`/`I`/`|` for 1,
//! `O`/`o` for 0) and separators between digits (space, `.`, `/`, `-`, `(`, `)`, `_`, `·`, `+`). A run of
//! [`DIGITS_IN_A_NUMBER_MIN`] digit-like characters holding at least [`REAL_DIGITS_IN_A_NUMBER_MIN`] digits is a
//! number, unless it is a date (`2026-11-25`, `2026/11/25`, `2026.11.25`). Invisible characters are the bidi controls
//! (U+202A–U+202E, U+2066–U+2069: they reorder what a reader sees), the zero-width characters and the other
//! invisible format characters listed in [`hidden_character`]: refused in every field a citizen sends.

use unicode_normalization::UnicodeNormalization;

/// Digit-like characters in a run that make it a number: the shortest phone numbers (a local landline without area
/// code) have 7 digits; an id card 18, a mobile number 11. Shorter runs are house numbers, counts and years.
pub const DIGITS_IN_A_NUMBER_MIN: usize = 7;
/// Real digits (not letter look-alikes) such a run must hold: `OOlIOOl` in a word is not a number, `l38l234l234` is.
pub const REAL_DIGITS_IN_A_NUMBER_MIN: usize = 4;
/// Separators in a row that still continue a run of digits (`(027) 8555` has two).
const SEPARATORS_IN_A_ROW_MAX: usize = 2;

/// What a public text may not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublicTextError {
    /// A phone, id-card, bank or QQ number, in whatever digits and separators.
    #[error("the text holds a number that looks like a phone or id number: `{0}`")]
    Number(String),
    /// An e-mail address.
    #[error("the text holds an e-mail address")]
    Email,
    /// An invisible character (bidi control, zero-width, other format character).
    #[error("the text holds an invisible character U+{0:04X}")]
    Hidden(u32),
}

/// The first invisible character of `text`: bidi embeddings, overrides and isolates, zero-width characters, the
/// byte-order mark, invisible fillers and tag characters. They change what a reader sees (U+202E turns
/// `txt.exe` around) or hide content from a check, and nobody types them on purpose.
pub fn hidden_character(text: &str) -> Option<char> {
    text.chars().find(|&c| {
        matches!(
            c as u32,
            0x00AD              // soft hyphen
            | 0x034F            // combining grapheme joiner
            | 0x061C            // Arabic letter mark (bidi)
            | 0x115F | 0x1160   // Hangul fillers
            | 0x17B4 | 0x17B5   // Khmer invisible vowels
            | 0x180B..=0x180F   // Mongolian variation selectors and vowel separator
            | 0x200B..=0x200F   // zero-width space, non-joiner, joiner; LRM, RLM
            | 0x202A..=0x202E   // bidi embeddings and overrides
            | 0x2060..=0x2064   // word joiner, invisible operators
            | 0x2066..=0x206F   // bidi isolates, deprecated format characters
            | 0x3164 | 0xFFA0   // Hangul fillers
            | 0xFEFF            // byte-order mark / zero-width no-break space
            | 0xFFF9..=0xFFFB   // interlinear annotation
            | 0x1D173..=0x1D17A // musical formatting
            | 0xE0000..=0xE007F // tag characters
        )
    })
}

/// How the number scanner sees one character of the normalised text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// A digit: ASCII after NFKC, any other Unicode number, or a Chinese digit word.
    Digit,
    /// A letter that passes for a digit (`l`, `I`, `|` → 1; `O`, `o` → 0).
    LookAlike,
    /// A separator people put between groups of digits.
    Separator,
    Other,
}

/// The digit a Chinese digit word stands for (`两` is left out: `两套` is a count in ordinary text).
fn digit_word(c: char) -> Option<u8> {
    Some(match c {
        '〇' | '零' => 0,
        '一' | '壹' | '幺' => 1,
        '二' | '贰' | '貳' => 2,
        '三' | '叁' | '參' => 3,
        '四' | '肆' => 4,
        '五' | '伍' => 5,
        '六' | '陆' | '陸' => 6,
        '七' | '柒' => 7,
        '八' | '捌' => 8,
        '九' | '玖' => 9,
        _ => return None,
    })
}

fn class(c: char) -> Class {
    if c.is_numeric() || digit_word(c).is_some() {
        Class::Digit
    } else if matches!(c, 'l' | 'I' | '|' | 'O' | 'o') {
        Class::LookAlike
    } else if c.is_whitespace() || matches!(c, '.' | '/' | '-' | '(' | ')' | '_' | '·' | '+' | '—' | '–') {
        Class::Separator
    } else {
        Class::Other
    }
}

/// The text as the checks read it: NFKC, Chinese digit words as ASCII digits. Exposed for tests and the desk.
pub fn normalise(text: &str) -> String {
    text.nfkc()
        .map(|c| match digit_word(c) {
            Some(d) => char::from(b'0' + d),
            None => c,
        })
        .collect()
}

/// A run of digit-like characters and the groups its separators cut it into.
#[derive(Debug, Default)]
struct Run {
    text: String,
    digit_like: usize,
    real: usize,
    /// Lengths of the digit groups, for the date rule.
    groups: Vec<usize>,
    separators_in_a_row: usize,
}

impl Run {
    fn push_digit(&mut self, c: char, real: bool) {
        if self.separators_in_a_row > 0 || self.groups.is_empty() {
            self.groups.push(0);
        }
        self.separators_in_a_row = 0;
        if let Some(last) = self.groups.last_mut() {
            *last += 1;
        }
        self.digit_like += 1;
        self.real += usize::from(real);
        self.text.push(c);
    }

    /// The run's groups without a leading date (`2026-11-25 …`): a date is not a number, what follows it may be.
    fn without_date(&self) -> (usize, &[usize]) {
        let date = match self.groups.as_slice() {
            [4, m, d, ..] if (1..=2).contains(m) && (1..=2).contains(d) => {
                let digits: Vec<u32> = self.text.chars().filter_map(|c| c.to_digit(10)).collect();
                let value = |from: usize, len: usize| {
                    digits.get(from..from + len).map(|ds| ds.iter().fold(0, |a, d| a * 10 + d))
                };
                let (year, month, day) = (value(0, 4), value(4, *m), value(4 + m, *d));
                matches!((year, month, day), (Some(1900..=2099), Some(1..=12), Some(1..=31)))
            }
            _ => false,
        };
        if date { (4 + self.groups[1] + self.groups[2], &self.groups[3..]) } else { (0, &self.groups) }
    }

    fn is_number(&self) -> bool {
        if self.digit_like < DIGITS_IN_A_NUMBER_MIN || self.real < REAL_DIGITS_IN_A_NUMBER_MIN {
            return false;
        }
        let (date_digits, rest) = self.without_date();
        date_digits == 0 || rest.iter().sum::<usize>() >= DIGITS_IN_A_NUMBER_MIN
    }
}

/// The first disguised number of `text` (as its digits were written), if any.
pub fn personal_number(text: &str) -> Option<String> {
    let mut run = Run::default();
    for c in normalise(text).chars() {
        match class(c) {
            Class::Digit => run.push_digit(c, true),
            Class::LookAlike => run.push_digit(c, false),
            Class::Separator if run.digit_like > 0 && run.separators_in_a_row < SEPARATORS_IN_A_ROW_MAX => {
                run.separators_in_a_row += 1;
                run.text.push(c);
            }
            Class::Separator | Class::Other => {
                if run.is_number() {
                    return Some(run.text.trim_end().to_owned());
                }
                run = Run::default();
            }
        }
    }
    run.is_number().then(|| run.text.trim_end().to_owned())
}

/// Whether `text` holds an e-mail address (`local@domain.tld`, full-width `＠` and `．` included via NFKC).
pub fn has_email(text: &str) -> bool {
    let text = normalise(text);
    let local = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-');
    text.match_indices('@').any(|(at, _)| {
        let before = text[..at].chars().next_back().is_some_and(local);
        let domain: String =
            text[at + 1..].chars().take_while(|&c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-')).collect();
        let tld_ok = domain.rsplit_once('.').is_some_and(|(name, tld)| {
            !name.is_empty() && tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic())
        });
        before && tld_ok
    })
}

/// Checks a text that will be shown publicly: no invisible character, no disguised number, no e-mail address.
pub fn check_public(text: &str) -> Result<(), PublicTextError> {
    if let Some(c) = hidden_character(text) {
        return Err(PublicTextError::Hidden(c as u32));
    }
    if let Some(number) = personal_number(text) {
        return Err(PublicTextError::Number(number));
    }
    if has_email(text) {
        return Err(PublicTextError::Email);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every bypass of issue 14 §3, and a few more disguises.
    const REFUSED: &[&str] = &[
        "13812345678",
        "138.1234.1234",
        "138/1234/1234",
        "138-1234-1234",
        "138 1234 1234",
        "１３８１２３４１２３４",
        "一三八一二三四一二三四",
        "幺三八幺二三四幺二三四",
        "壹叁捌壹贰叁肆壹贰叁肆",
        "①③⑧①②③④①②③④",
        "l38l234l234",
        "I38I234I234",
        "13812345O78",
        "138 一二三四 1234",
        "(027)8555-1234",
        "027-85551234",
        "85551234",
        "42010619900101123X",
        "420106 19900101 123x",
        "４２０１０６１９９００１０１１２３Ｘ",
        "2026-11-25 13812345678",
        "٣٨١٢٣٤٥٦٧٨",
    ];
    const EMAILS: &[&str] = &["li.jianguo@example.com", "邮箱lijianguo＠qq．com", "a@b.cn"];
    const ACCEPTED: &[&str] = &[
        "老房子登记成一套，实际是两套",
        "2026年11月25日起漏水",
        "2026-11-25 起漏水",
        "2026/11/25",
        "2026.11.25 14:30 到窗口",
        "3号楼2单元502室",
        "等了45分钟",
        "一二三楼都停水",
        "Hello World, look at room 101",
        "OOlIOOl",
        "@某部门 请回复",
        "第1、2、3、4、5、6、7项材料",
    ];

    #[test]
    fn every_listed_bypass_is_refused_and_ordinary_text_passes() {
        for text in REFUSED {
            assert!(
                matches!(check_public(text), Err(PublicTextError::Number(_))),
                "{text:?} should be refused as a number: {:?}",
                check_public(text)
            );
        }
        for text in EMAILS {
            assert_eq!(check_public(text), Err(PublicTextError::Email), "{text:?}");
        }
        for text in ACCEPTED {
            assert_eq!(check_public(text), Ok(()), "{text:?} should pass");
        }
        println!(
            "public text: {} numbers and {} e-mail addresses refused, {} ordinary texts accepted",
            REFUSED.len(),
            EMAILS.len(),
            ACCEPTED.len()
        );
    }

    #[test]
    fn the_normaliser_maps_every_digit_form_to_ascii() {
        assert_eq!(normalise("１３８"), "138");
        assert_eq!(normalise("①③⑧"), "138");
        assert_eq!(normalise("一三八幺〇零"), "138100");
        assert_eq!(normalise("＠．"), "@.");
        assert_eq!(personal_number("电话l38l234l234。"), Some("l38l234l234".to_owned()));
        assert_eq!(personal_number("电话 138.1234.1234 "), Some("138.1234.1234".to_owned()));
    }

    #[test]
    fn invisible_characters_are_found() {
        for c in [
            '\u{202E}',
            '\u{202A}',
            '\u{2066}',
            '\u{2069}',
            '\u{200B}',
            '\u{200D}',
            '\u{FEFF}',
            '\u{E0041}',
            '\u{00AD}',
        ] {
            let text = format!("路灯{c}不亮");
            assert_eq!(hidden_character(&text), Some(c), "U+{:04X}", c as u32);
            assert_eq!(check_public(&text), Err(PublicTextError::Hidden(c as u32)));
        }
        // Emoji with a variation selector are visible text.
        assert_eq!(hidden_character("谢谢❤️"), None);
    }
}
