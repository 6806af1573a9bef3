//! The revision of an operation file from its head: `seq` is written right after the id,
//! so a reader that only needs to know whether its view is still current reads a few
//! hundred bytes instead of the whole file (which grows with every open call).
//!
//! Only the top-level key counts: it is the first key after `operationId` in the first
//! object, on a line of its own at the top level's indentation (a JSON string cannot
//! hold a raw line break, so such a line is never inside a value). Anything else (a file
//! written by another tool, keys in another order) gives `None`, and the caller reads
//! the file whole.

/// Bytes read from the head: the opening brace, the id (at most 128 characters) and
/// `seq` fit with room to spare.
pub const HEAD_BYTES: usize = 512;

/// The top-level `seq` of a pretty-printed operation file from its first bytes.
pub fn seq_in_head(head: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(head).ok().or_else(|| {
        // The head may end inside a multi-byte character: keep the valid part.
        let valid = std::str::from_utf8(head).err()?.valid_up_to();
        std::str::from_utf8(&head[..valid]).ok()
    })?;
    let mut lines = text.split('\n');
    if lines.next()? != "{" {
        return None;
    }
    let id = lines.next()?;
    let id_value = id.strip_prefix("  \"operationId\": \"")?;
    // Ids hold no quotes, braces or backslashes (see `ids`): the line is the id alone.
    if !id_value.ends_with("\",") || id_value[..id_value.len() - 2].contains(['"', '\\']) {
        return None;
    }
    let seq_line = lines.next()?;
    // The line must be complete (a line break follows it within the head).
    lines.next()?;
    let digits = seq_line.strip_prefix("  \"seq\": ")?.strip_suffix(',')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{OperationId, ParticipantId};
    use crate::model::LedgerData;

    #[test]
    fn the_written_file_carries_its_seq_in_the_head() {
        let mut data = LedgerData::new(
            OperationId::parse("20260101T000000.000-cli-0123abcd").unwrap(),
            ParticipantId::parse("cli").unwrap(),
            crate::model::time::now(),
        );
        data.seq = 4242;
        let json = data.to_json();
        let head = &json[..HEAD_BYTES.min(json.len())];
        assert_eq!(seq_in_head(head), Some(4242));
        let id = OperationId::parse(&"a".repeat(128)).unwrap();
        data.operation_id = id;
        let json = data.to_json();
        assert_eq!(seq_in_head(&json[..HEAD_BYTES.min(json.len())]), Some(4242));
    }

    #[test]
    fn anything_but_the_store_s_own_head_is_not_taken() {
        for head in [
            "",
            "{\n  \"operationId\": \"op\",\n  \"seq\": 7,",
            "{\n  \"operationId\": \"op\",\n  \"initiatorId\": \"x\",\n  \"seq\": 7,\n",
            "{\n  \"seq\": 7,\n  \"operationId\": \"op\",\n",
            "{\"operationId\": \"op\", \"seq\": 7,\n",
            "{\n  \"operationId\": \"op\",\n    \"seq\": 7,\n",
            "{\n  \"operationId\": \"o\\\"p\",\n  \"seq\": 7,\n",
            "{\n  \"operationId\": \"op\",\n  \"seq\": -7,\n",
            "{\n  \"operationId\": \"op\",\n  \"seq\": 99999999999999999999999,\n",
            "[\n  \"operationId\": \"op\",\n  \"seq\": 7,\n",
        ] {
            assert_eq!(seq_in_head(head.as_bytes()), None, "{head:?}");
        }
        assert_eq!(
            seq_in_head(b"{\n  \"operationId\": \"op\",\n  \"seq\": 7,\n  \"initiatorId\""),
            Some(7)
        );
    }
}
