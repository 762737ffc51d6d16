//! Go release numbers, as the toolchain writes them into a binary (`go1.22.12`).

use std::fmt;

/// A Go release: `1.22.12`. Pre-releases (`go1.26rc1`) count as the `.0` release they lead to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoVersion {
    /// Always 1 so far.
    pub major: u32,
    /// The minor release, which is what changes struct layouts and the ABI.
    pub minor: u32,
    /// The patch release.
    pub patch: u32,
}

impl GoVersion {
    /// A version from its parts.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        GoVersion {
            major,
            minor,
            patch,
        }
    }

    /// Parses the version string Go stores in a binary: `go1.22.12`, `go1.17` (1.17.0),
    /// `go1.26rc1` and `go1.21beta2` (the coming `.0`), with anything after the number
    /// ignored (`go1.24.2 X:boringcrypto`, `go1.25-20250209-RC00 cl/724970549`). The `go`
    /// prefix is optional. Development builds (`devel go1.27-abcdef`) have no release number
    /// and give `None`.
    pub fn parse(s: &str) -> Option<GoVersion> {
        let s = s.trim();
        let s = s.strip_prefix("go").unwrap_or(s);
        let (major, rest) = leading_number(s)?;
        let rest = rest.strip_prefix('.')?;
        let (minor, rest) = leading_number(rest)?;
        let patch = match rest.strip_prefix('.') {
            Some(r) => leading_number(r)?.0,
            None => 0,
        };
        Some(GoVersion::new(major, minor, patch))
    }
}

/// The decimal number at the start of `s` and what follows it.
fn leading_number(s: &str) -> Option<(u32, &str)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    Some((s[..digits].parse().ok()?, &s[digits..]))
}

impl fmt::Display for GoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::GoVersion;

    #[test]
    fn parses_release_strings() {
        let v = |s| GoVersion::parse(s);
        assert_eq!(v("go1.22.12"), Some(GoVersion::new(1, 22, 12)));
        assert_eq!(v("go1.21.0"), Some(GoVersion::new(1, 21, 0)));
        assert_eq!(v("go1.17"), Some(GoVersion::new(1, 17, 0)));
        assert_eq!(v("go1.26rc1"), Some(GoVersion::new(1, 26, 0)));
        assert_eq!(v("go1.21beta2"), Some(GoVersion::new(1, 21, 0)));
        assert_eq!(v("go1.24.2 X:boringcrypto"), Some(GoVersion::new(1, 24, 2)));
        assert_eq!(
            v("go1.25-20250209-RC00 cl/724970549 +ff27d270c9 X:fieldtrack,boringcrypto"),
            Some(GoVersion::new(1, 25, 0))
        );
        assert_eq!(v("1.20.14"), Some(GoVersion::new(1, 20, 14)));
        assert_eq!(v("devel go1.27-8b2d1f0 Tue Jan 6 2026"), None);
        assert_eq!(v("go"), None);
        assert_eq!(v("go1"), None);
        assert_eq!(v("go1.99999999999999999999"), None);
        assert_eq!(v(""), None);
    }

    #[test]
    fn orders_and_prints() {
        assert!(GoVersion::new(1, 9, 0) < GoVersion::new(1, 10, 0));
        assert!(GoVersion::new(1, 22, 12) < GoVersion::new(1, 23, 0));
        assert_eq!(GoVersion::new(1, 22, 12).to_string(), "1.22.12");
    }
}
