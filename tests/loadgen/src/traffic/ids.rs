//! The ids a run makes: its run id, which begins every `drop_id` and
//! `event_id` it sends, and the random UUIDs of its contacts and sessions.

use rand::{Rng, rngs::SmallRng};

/// Identifies one run. Its ten hex digits begin every `drop_id` and every
/// signed `event_id` (across its first hyphen) and are in every `foreign_id`
/// the run sends, so runs never collide and the verifier finds a run's rows
/// with one index range scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RunId(u64);

impl RunId {
    /// Hex digits of a run id at the start of a `drop_id`.
    pub const HEX_LEN: usize = 10;
    const BITS: u32 = 4 * Self::HEX_LEN as u32;

    /// A random run id (40 bits: two runs against one database collide with
    /// odds of about one in a trillion).
    pub fn random() -> Self {
        Self(rand::random::<u64>() & ((1 << Self::BITS) - 1))
    }

    /// A run id from its ten hex digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        (hex.len() == Self::HEX_LEN && is_hex(hex))
            .then(|| u64::from_str_radix(hex, 16).ok().map(Self))
            .flatten()
    }

    /// The ten lowercase hex digits.
    pub fn hex(self) -> String {
        format!("{:010x}", self.0)
    }

    /// `drop_id` of item `item`: 24 lowercase hex digits, like the provider's
    /// (the run id, then the item number).
    pub fn drop_id(self, item: u64) -> String {
        format!("{:010x}{item:014x}", self.0)
    }

    /// The item a `drop_id` of this run names, or `None` if it is not one.
    pub fn item_of(self, drop_id: &str) -> Option<u64> {
        let rest = drop_id.strip_prefix(&self.hex())?;
        (rest.len() == 14 && is_hex(rest))
            .then(|| u64::from_str_radix(rest, 16).ok())
            .flatten()
    }

    /// `event_id` of body `body` of item `item`: a UUID, as the provider's
    /// are, whose 32 hex digits are the run id, the item number, the body's
    /// index and six zeros.
    pub fn event_id(self, item: u64, body: usize) -> String {
        hyphenated(&format!("{:010x}{item:014x}{body:02x}000000", self.0))
    }

    /// What every `event_id` of this run begins with: the run id's ten hex
    /// digits, a hyphen after the eighth.
    pub fn event_prefix(self) -> String {
        let hex = self.hex();
        format!("{}-{}", &hex[..8], &hex[8..])
    }

    /// The item and body an `event_id` of this run names, or `None` if it
    /// is not one.
    pub fn event_of(self, event_id: &str) -> Option<(u64, usize)> {
        let bytes = event_id.as_bytes();
        if bytes.len() != 36 || [8, 13, 18, 23].iter().any(|&at| bytes[at] != b'-') {
            return None;
        }
        let hex: String = event_id.split('-').collect();
        if hex.len() != 32
            || !is_hex(&hex)
            || !hex.starts_with(&self.hex())
            || &hex[26..] != "000000"
        {
            return None;
        }
        let item = u64::from_str_radix(&hex[10..24], 16).ok()?;
        let body = usize::from_str_radix(&hex[24..26], 16).ok()?;
        Some((item, body))
    }
}

/// 32 hex digits as a UUID: 8-4-4-4-12.
pub(super) fn hyphenated(hex: &str) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Lowercase hex digits only.
fn is_hex(text: &str) -> bool {
    text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:010x}", self.0)
    }
}

/// A random version-4 UUID.
pub(super) fn uuid(rng: &mut SmallRng) -> String {
    let bits: u128 = rng.random();
    let bits = (bits & !(0xf << 76)) | (0x4 << 76);
    let bits = (bits & !(0x3 << 62)) | (0x2 << 62);
    hyphenated(&format!("{bits:032x}"))
}
