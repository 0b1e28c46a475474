//! Lower-case hexadecimal through a table, one allocation per string: the request
//! fingerprint and the audit hashes (each had a private copy of this), and the
//! simulator's card fingerprint, discrepancy ids and assertion tags (each made a String
//! per byte with `format!`).

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends the lower-case hex of `bytes` to `out`.
pub fn push(out: &mut String, bytes: &[u8]) {
    out.reserve(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

/// The lower-case hex of `bytes`.
pub fn lower(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push(&mut out, bytes);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_byte_is_two_lower_case_digits_as_format_writes_them() {
        let all: Vec<u8> = (0..=255).collect();
        let expected: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(super::lower(&all), expected);
        let mut out = String::from("dsc_");
        super::push(&mut out, &[0x00, 0xab, 0xff]);
        assert_eq!(out, "dsc_00abff");
        assert_eq!(super::lower(&[]), "");
    }
}
