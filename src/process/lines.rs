//! Turning a byte stream into lines.
//!
//! Pipes deliver chunks of any size, and a line may straddle two (or a hundred) chunks;
//! splitting each chunk on its own breaks such lines. The decoder keeps the unfinished
//! line between chunks, accepts `\n` and `\r\n`, emits a final line that has no newline,
//! bounds the length of a line (a worker printing a gigabyte without a newline must not
//! take the supervisor's memory), and decodes UTF-8 lossily only once a line is whole, so
//! a character split across chunks comes out intact.

use std::collections::VecDeque;

/// Default bound on one line, in bytes; longer lines are cut there.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

/// Marks a line cut at the length bound.
pub const TRUNCATED_MARK: &str = " [line truncated]";

/// Splits byte chunks into lines.
#[derive(Debug)]
pub struct LineDecoder {
    buf: Vec<u8>,
    max_line: usize,
    /// Appended to a line cut at `max_line`.
    mark: std::borrow::Cow<'static, str>,
    /// The current line was cut; drop bytes until its newline.
    skipping: bool,
}

impl Default for LineDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_LINE)
    }
}

impl LineDecoder {
    /// A decoder cutting lines longer than `max_line` bytes (at least 1).
    pub fn new(max_line: usize) -> Self {
        Self::with_mark(max_line, TRUNCATED_MARK)
    }

    /// Like [`new`](Self::new), with the text appended to a cut line (to say where the
    /// limit is set, say).
    pub fn with_mark(max_line: usize, mark: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        LineDecoder {
            buf: Vec::new(),
            max_line: max_line.max(1),
            mark: mark.into(),
            skipping: false,
        }
    }

    /// Feeds one chunk; `emit` gets every line completed by it, without its line end.
    pub fn push(&mut self, mut chunk: &[u8], emit: &mut impl FnMut(String)) {
        while !chunk.is_empty() {
            let newline = chunk.iter().position(|b| *b == b'\n');
            let (part, rest, complete) = match newline {
                Some(i) => (&chunk[..i], &chunk[i + 1..], true),
                None => (chunk, &[][..], false),
            };
            chunk = rest;
            if !self.skipping {
                let room = self.max_line - self.buf.len();
                if part.len() > room {
                    self.buf.extend_from_slice(&part[..room]);
                    emit(self.take_line(true));
                    self.skipping = !complete;
                } else {
                    self.buf.extend_from_slice(part);
                    if complete {
                        emit(self.take_line(false));
                    }
                }
            } else if complete {
                self.skipping = false;
            }
        }
    }

    /// Ends the stream: emits the last line if it had no newline.
    pub fn finish(&mut self, emit: &mut impl FnMut(String)) {
        if !self.buf.is_empty() {
            emit(self.take_line(false));
        }
        self.skipping = false;
    }

    fn take_line(&mut self, truncated: bool) -> String {
        let mut bytes = std::mem::take(&mut self.buf);
        if !truncated && bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        let mut line = String::from_utf8_lossy(&bytes).into_owned();
        if truncated {
            line.push_str(&self.mark);
        }
        line
    }
}

/// The last `capacity` lines seen (for error messages: the end of a worker's stderr).
#[derive(Clone, Debug, Default)]
pub struct LineTail {
    lines: VecDeque<String>,
    capacity: usize,
}

impl LineTail {
    pub fn new(capacity: usize) -> Self {
        LineTail {
            lines: VecDeque::with_capacity(capacity.min(64)),
            capacity,
        }
    }

    pub fn push(&mut self, line: &str) {
        if self.capacity == 0 {
            return;
        }
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(line.to_owned());
    }

    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(String::as_str)
    }

    /// The lines joined with `\n`.
    pub fn joined(&self) -> String {
        self.lines().collect::<Vec<_>>().join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(chunks: &[&[u8]], max: usize) -> Vec<String> {
        let mut d = LineDecoder::new(max);
        let mut out = Vec::new();
        for c in chunks {
            d.push(c, &mut |l| out.push(l));
        }
        d.finish(&mut |l| out.push(l));
        out
    }

    #[test]
    fn joins_lines_across_chunks() {
        let out = decode(&[b"he", b"llo\nwor", b"ld\n", b"\n", b"last"], 100);
        assert_eq!(out, ["hello", "world", "", "last"]);
    }

    #[test]
    fn strips_crlf_even_when_split() {
        assert_eq!(decode(&[b"a\r", b"\nb\r\n"], 100), ["a", "b"]);
    }

    #[test]
    fn keeps_multibyte_char_split_across_chunks() {
        let s = "grüße\n".as_bytes();
        assert_eq!(decode(&[&s[..3], &s[3..]], 100), ["grüße"]);
        assert_eq!(decode(&[b"\xff\xfeok\n"], 100), ["\u{fffd}\u{fffd}ok"]);
    }

    #[test]
    fn cuts_overlong_lines_and_resyncs_at_newline() {
        let out = decode(&[b"abcdefgh", b"ijkl\nxy\n"], 5);
        assert_eq!(out, [format!("abcde{TRUNCATED_MARK}"), "xy".to_owned()]);
        let exact = decode(&[b"abcde\n"], 5);
        assert_eq!(exact, ["abcde"]);
    }

    #[test]
    fn every_split_point_gives_the_same_lines() {
        let text = b"one\r\ntwo\n\nthree four\nfive";
        let whole = decode(&[text], 100);
        for i in 0..text.len() {
            for j in i..text.len() {
                assert_eq!(decode(&[&text[..i], &text[i..j], &text[j..]], 100), whole);
            }
        }
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let mut t = LineTail::new(2);
        for l in ["a", "b", "c"] {
            t.push(l);
        }
        assert_eq!(t.joined(), "b\nc");
        let mut none = LineTail::new(0);
        none.push("x");
        assert_eq!(none.joined(), "");
    }
}
