//! Byte strings inside stored and exported records (MACs, sealed secrets, recovery hashes): hex
//! in human-readable formats (exports, old JSON records), plain bytes in postcard.

#![forbid(unsafe_code)]

/// Byte strings as hex in human-readable formats (exports, JSON records), as bytes in postcard.
pub mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match s.is_human_readable() {
            true => s.serialize_str(&hex::encode(bytes)),
            false => bytes.serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        match d.is_human_readable() {
            true => hex::decode(String::deserialize(d)?).map_err(D::Error::custom),
            false => Vec::<u8>::deserialize(d),
        }
    }
}

/// A list of byte strings, as [`hex_bytes`] does one.
pub mod hex_list {
    use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error};

    pub fn serialize<S: Serializer>(list: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        match s.is_human_readable() {
            true => s.collect_seq(list.iter().map(hex::encode)),
            false => list.serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        match d.is_human_readable() {
            true => Vec::<String>::deserialize(d)?
                .iter()
                .map(|item| hex::decode(item).map_err(D::Error::custom))
                .collect(),
            false => Vec::<Vec<u8>>::deserialize(d),
        }
    }
}
