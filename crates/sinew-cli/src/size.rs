//! Byte sizes on the command line: `16384`, `16KiB`, `64MiB`, `1GiB`.

/// Parses a byte count: a bare number of bytes, or a number with a binary
/// unit (`B`, `KiB`, `MiB`, `GiB`; `k`, `m`, `g` are read the same way).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 16384, 16KiB or 64MiB"))?;
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}: use B, KiB, MiB or GiB"
            ))
        }
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is out of range"))
}

/// [`parse_size`] for settings that fit in a `u32`.
pub(crate) fn parse_size_u32(text: &str) -> Result<u32, String> {
    let bytes = parse_size(text)?;
    u32::try_from(bytes).map_err(|_| format!("{text:?} is larger than 4 GiB - 1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_with_binary_units() {
        assert_eq!(parse_size("16384"), Ok(16384));
        assert_eq!(parse_size("16KiB"), Ok(16 * 1024));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("1.5MiB").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size_u32("4GiB").is_err());
    }
}
