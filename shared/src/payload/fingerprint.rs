//! The identity of a webhook: the SHA-256 of its canonical form (object keys
//! sorted, no insignificant whitespace, strings re-escaped one way, numbers as
//! their exact text), so the same webhook sent twice is recognised even when
//! its bytes differ in formatting.

use std::{collections::BTreeMap, fmt};

use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::{PayloadError, json_type};

/// SHA-256 of a payload's canonical form: the identity of a webhook.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        f.write_str("…")
    }
}

impl Fingerprint {
    /// The fingerprint of an object already parsed into its (sorted) members.
    pub(super) fn of_object(
        fields: &BTreeMap<String, &RawValue>,
        size_hint: usize,
    ) -> Result<Self, PayloadError> {
        let mut canonical = Vec::with_capacity(size_hint);
        canonical_object(fields, &mut canonical)?;
        Ok(Self(Sha256::digest(&canonical).into()))
    }
}

/// Writes the canonical form of a JSON value: object keys sorted, no
/// insignificant whitespace, strings re-escaped the one way serde_json does,
/// numbers as their exact text. Refuses U+0000 anywhere.
pub(super) fn canonicalize(raw: &RawValue, out: &mut Vec<u8>) -> Result<(), PayloadError> {
    let invalid = |err: serde_json::Error| PayloadError::InvalidJson(err.to_string());
    match json_type(raw) {
        "an object" => {
            let map: BTreeMap<String, &RawValue> =
                serde_json::from_str(raw.get()).map_err(invalid)?;
            canonical_object(&map, out)?;
        }
        "an array" => {
            let items: Vec<&RawValue> = serde_json::from_str(raw.get()).map_err(invalid)?;
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonicalize(item, out)?;
            }
            out.push(b']');
        }
        // Without a backslash a JSON string has no escapes, and (being valid
        // JSON) no quote or control character: it already is its canonical
        // form, and it cannot hold U+0000.
        "a string" if !raw.get().contains('\\') => out.extend_from_slice(raw.get().as_bytes()),
        "a string" => {
            let value: String = serde_json::from_str(raw.get()).map_err(invalid)?;
            if value.contains('\0') {
                return Err(PayloadError::NulCharacter);
            }
            serde_json::to_writer(&mut *out, &value).map_err(invalid)?;
        }
        _ => out.extend_from_slice(raw.get().trim().as_bytes()),
    }
    Ok(())
}

/// The canonical form of an object already parsed into its (sorted) members.
fn canonical_object(
    map: &BTreeMap<String, &RawValue>,
    out: &mut Vec<u8>,
) -> Result<(), PayloadError> {
    out.push(b'{');
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if key.contains('\0') {
            return Err(PayloadError::NulCharacter);
        }
        serde_json::to_writer(&mut *out, key)
            .map_err(|err| PayloadError::InvalidJson(err.to_string()))?;
        out.push(b':');
        canonicalize(value, out)?;
    }
    out.push(b'}');
    Ok(())
}
