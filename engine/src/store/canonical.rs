//! The canonical JSON of audit contents, outbox payloads and journal entries: the bytes
//! Python's `json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=True)` gives
//! for the same object, because the audit chain hashes these bytes and `quickpay audit
//! verify` (Python) recomputes them. Objects here are flat, with string and integer
//! values and keys given in sorted order.

use std::fmt::Write;

/// A flat JSON object written key by key; keys must come in ascending order.
pub struct Object {
    out: String,
    #[cfg(debug_assertions)]
    last_key: &'static str,
}

impl Default for Object {
    fn default() -> Self {
        Self::new()
    }
}

impl Object {
    pub fn new() -> Self {
        let mut out = String::with_capacity(192);
        out.push('{');
        Object {
            out,
            #[cfg(debug_assertions)]
            last_key: "",
        }
    }

    fn key(&mut self, key: &'static str) {
        #[cfg(debug_assertions)]
        {
            debug_assert!(self.last_key < key, "keys out of order: {key}");
            self.last_key = key;
        }
        if self.out.len() > 1 {
            self.out.push(',');
        }
        self.out.push('"');
        self.out.push_str(key); // keys are ASCII identifiers: nothing to escape
        self.out.push_str("\":");
    }

    pub fn str(&mut self, key: &'static str, value: &str) -> &mut Self {
        self.key(key);
        string_into(&mut self.out, value);
        self
    }

    pub fn int(&mut self, key: &'static str, value: i64) -> &mut Self {
        self.key(key);
        write!(self.out, "{value}").expect("writing to a String cannot fail");
        self
    }

    pub fn finish(&mut self) -> String {
        self.out.push('}');
        std::mem::take(&mut self.out)
    }
}

/// A JSON string as Python's encoder with ensure_ascii writes it: printable ASCII as it
/// is (but `"` and `\`), the five short escapes, everything else `\u` and four lowercase
/// hex digits (a UTF-16 surrogate pair past the BMP). DEL (0x7f) is escaped too.
pub fn string_into(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut plain = 0; // start of the run of bytes copied as they are
    for (at, ch) in value.char_indices() {
        if (' '..='~').contains(&ch) && ch != '"' && ch != '\\' {
            continue;
        }
        out.push_str(&value[plain..at]);
        plain = at + ch.len_utf8();
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            _ => {
                let mut units = [0u16; 2];
                for unit in ch.encode_utf16(&mut units) {
                    out.push_str("\\u");
                    for shift in [12, 8, 4, 0] {
                        out.push(HEX[usize::from((*unit >> shift) & 0xf)] as char);
                    }
                }
            }
        }
    }
    out.push_str(&value[plain..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(value: &str) -> String {
        let mut out = String::new();
        string_into(&mut out, value);
        out
    }

    #[test]
    fn strings_are_escaped_as_python_does() {
        // Each expectation is what json.dumps(value, ensure_ascii=True) prints.
        assert_eq!(encoded("plain text 123"), r#""plain text 123""#);
        assert_eq!(encoded("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(encoded("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(encoded("\u{1}\u{1f}\u{7f}"), r#""\u0001\u001f\u007f""#);
        assert_eq!(encoded("café"), r#""caf\u00e9""#);
        assert_eq!(encoded("₿ 𝄞"), r#""\u20bf \ud834\udd1e""#);
        assert_eq!(encoded(""), r#""""#);
    }

    #[test]
    fn objects_are_compact_with_sorted_keys() {
        let text = Object::new()
            .str("account_id", "acc-1")
            .int("amount_minor", -1500)
            .str("kind", "payment.settled")
            .finish();
        assert_eq!(
            text,
            r#"{"account_id":"acc-1","amount_minor":-1500,"kind":"payment.settled"}"#
        );
        assert_eq!(Object::new().finish(), "{}");
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "keys out of order")]
    fn unsorted_keys_are_a_bug() {
        Object::new().str("b", "").str("a", "");
    }
}
