//! CTranslate2's `vocabulary.txt` to whisper.cpp's byte tokens.
//!
//! The vocabulary lists GPT-2 byte-level BPE tokens, one per line, written with GPT-2's
//! byte-to-printable-character mapping (`Ġ` for a space and so on). whisper.cpp wants the raw
//! bytes of each ordinary token, i.e. the tokens before `<|endoftext|>`.

use crate::{Error, Result};

/// GPT-2's `bytes_to_unicode` table, inverted: printable char -> byte.
fn unicode_to_byte() -> std::collections::HashMap<char, u8> {
    let mut printable: Vec<u32> = (u32::from('!')..=u32::from('~'))
        .chain(u32::from('¡')..=u32::from('¬'))
        .chain(u32::from('®')..=u32::from('ÿ'))
        .collect();
    let mut chars = printable.clone();
    let mut extra = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + extra);
            extra += 1;
        }
    }
    printable
        .into_iter()
        .zip(chars)
        .filter_map(|(b, c)| Some((char::from_u32(c)?, u8::try_from(b).ok()?)))
        .collect()
}

/// Decodes one vocabulary line into the token's bytes.
pub fn token_bytes(token: &str, table: &std::collections::HashMap<char, u8>) -> Result<Vec<u8>> {
    token
        .chars()
        .map(|c| {
            table.get(&c).copied().ok_or_else(|| {
                Error::Vocab(format!(
                    "character {c:?} in token {token:?} is not byte-level BPE"
                ))
            })
        })
        .collect()
}

/// The ordinary tokens (before `<|endoftext|>`) as raw bytes.
pub fn ordinary_tokens(vocabulary: &str) -> Result<Vec<Vec<u8>>> {
    let table = unicode_to_byte();
    let mut out = Vec::new();
    for line in vocabulary.lines() {
        if line == "<|endoftext|>" {
            return Ok(out);
        }
        out.push(token_bytes(line, &table)?);
    }
    Err(Error::Vocab("no <|endoftext|> token found".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_byte_level_tokens() {
        let tokens = ordinary_tokens("!\nĠthe\nĊ\nÃ©\n<|endoftext|>\n<|startoftranscript|>\n")
            .expect("vocab");
        assert_eq!(
            tokens,
            vec![
                b"!".to_vec(),
                b" the".to_vec(),
                b"\n".to_vec(),
                "é".as_bytes().to_vec()
            ]
        );
    }

    #[test]
    fn rejects_foreign_text() {
        assert!(ordinary_tokens("hello\n").is_err(), "no end token");
        assert!(ordinary_tokens("日本\n<|endoftext|>\n").is_err());
    }
}
