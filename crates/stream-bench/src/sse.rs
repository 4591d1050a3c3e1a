//! A small incremental SSE parser for the load client: it yields each event's `data` and
//! nothing else, and copies it only when it is not in one chunk.
//!
//! It follows the event stream interpretation of the HTML spec (the same as
//! `eventsource-stream`, which the client used before): lines end with `\r\n`, `\n` or `\r`; a
//! UTF-8 BOM at the very start is skipped; a line starting with `:` is a comment; `data` lines
//! append their value (after one optional space) to the event's data, joined with `\n`; `id`,
//! `event`, `retry` and unknown fields are ignored; an empty line dispatches the event if it had
//! at least one `data` line (even an empty one). Bytes are not checked for UTF-8: the data goes
//! to a JSON parser that checks its strings.

use memchr::{memchr, memchr2};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// What one line does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Empty: dispatch the event.
    Dispatch,
    /// A `data` field whose value starts at this offset in the line and runs to its end.
    Data(usize),
    /// A comment or another field.
    Ignore,
}

/// An incremental SSE parser: feed it the body's chunks in order with [`SseParser::feed`].
#[derive(Debug, Default)]
pub struct SseParser {
    /// The start of a line whose end has not arrived yet.
    line: Vec<u8>,
    /// The event's data so far, when it could not be borrowed from a chunk (only meaningful
    /// while `has_data`).
    data: Vec<u8>,
    /// The event being built has had a `data` line, and `data` holds its data.
    has_data: bool,
    /// The last chunk ended with `\r`: a `\n` starting the next chunk belongs to that line end.
    skip_lf: bool,
    /// The first line has been seen (a BOM is only skipped before it).
    started: bool,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the next chunk of the stream, calling `on_event` with the data of every event it
    /// completes, in order. The data is borrowed from `chunk` when the event's only `data` line
    /// lies in it, and from the parser's buffer otherwise.
    pub fn feed(&mut self, chunk: &[u8], mut on_event: impl FnMut(&[u8])) {
        let mut chunk = chunk;
        if chunk.is_empty() {
            return;
        }
        if std::mem::take(&mut self.skip_lf) && chunk[0] == b'\n' {
            chunk = &chunk[1..];
        }
        let mut pos = 0;
        // Finish the line begun in an earlier chunk.
        if !self.line.is_empty() {
            let Some(end) = memchr2(b'\n', b'\r', chunk) else {
                self.line.extend_from_slice(chunk);
                return;
            };
            self.line.extend_from_slice(&chunk[..end]);
            let line = std::mem::take(&mut self.line);
            match self.classify(&line) {
                Line::Dispatch => self.dispatch_owned(&mut on_event),
                Line::Data(at) => self.append_owned(&line[at..]),
                Line::Ignore => {}
            }
            // Keep the buffer's capacity for the next split line.
            self.line = line;
            self.line.clear();
            pos = self.after_line_end(chunk, end);
        }
        // The event's data as a range of `chunk`, while it has a single data line in it (and so
        // `has_data` is false).
        let mut borrowed: Option<(usize, usize)> = None;
        while pos < chunk.len() {
            let Some(len) = memchr2(b'\n', b'\r', &chunk[pos..]) else {
                self.line.extend_from_slice(&chunk[pos..]);
                break;
            };
            let end = pos + len;
            match self.classify(&chunk[pos..end]) {
                Line::Dispatch => match borrowed.take() {
                    Some((a, b)) => on_event(&chunk[a..b]),
                    None => self.dispatch_owned(&mut on_event),
                },
                Line::Data(at) => {
                    let value = (pos + at, end);
                    if let Some((a, b)) = borrowed.take() {
                        // A second data line: from now on the data is copied.
                        self.data.clear();
                        self.data.extend_from_slice(&chunk[a..b]);
                        self.has_data = true;
                        self.append_owned(&chunk[value.0..value.1]);
                    } else if self.has_data {
                        self.append_owned(&chunk[value.0..value.1]);
                    } else {
                        borrowed = Some(value);
                    }
                }
                Line::Ignore => {}
            }
            pos = self.after_line_end(chunk, end);
        }
        // The event goes on in the next chunk: keep its data.
        if let Some((a, b)) = borrowed {
            self.data.clear();
            self.data.extend_from_slice(&chunk[a..b]);
            self.has_data = true;
        }
    }

    /// Where the next line starts, given the line end at `chunk[end]`.
    fn after_line_end(&mut self, chunk: &[u8], end: usize) -> usize {
        if chunk[end] == b'\r' {
            match chunk.get(end + 1) {
                Some(b'\n') => return end + 2,
                Some(_) => {}
                None => self.skip_lf = true,
            }
        }
        end + 1
    }

    fn classify(&mut self, line: &[u8]) -> Line {
        let mut skip = 0;
        if !self.started {
            self.started = true;
            if line.starts_with(BOM) {
                skip = BOM.len();
            }
        }
        let rest = &line[skip..];
        match rest.first() {
            None => return Line::Dispatch,
            Some(b':') => return Line::Ignore,
            Some(_) => {}
        }
        let (name, value_at) = match memchr(b':', rest) {
            Some(colon) => {
                let space = usize::from(rest.get(colon + 1) == Some(&b' '));
                (&rest[..colon], colon + 1 + space)
            }
            None => (rest, rest.len()),
        };
        if name == b"data" {
            Line::Data(skip + value_at)
        } else {
            Line::Ignore
        }
    }

    fn append_owned(&mut self, value: &[u8]) {
        if self.has_data {
            self.data.push(b'\n');
        } else {
            self.data.clear();
            self.has_data = true;
        }
        self.data.extend_from_slice(value);
    }

    fn dispatch_owned(&mut self, on_event: &mut impl FnMut(&[u8])) {
        if std::mem::take(&mut self.has_data) {
            on_event(&self.data);
            self.data.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event's data, feeding `chunks` in order.
    fn parse(chunks: &[&[u8]]) -> Vec<String> {
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, |data| out.push(String::from_utf8(data.to_vec()).unwrap()));
        }
        out
    }

    /// The same, for the stream split in two at every position and split into single bytes.
    fn parse_every_split(stream: &[u8]) -> Vec<String> {
        let whole = parse(&[stream]);
        for at in 0..=stream.len() {
            let (a, b) = stream.split_at(at);
            assert_eq!(parse(&[a, b]), whole, "split at {at}");
            for at2 in at..=stream.len() {
                let (b1, b2) = b.split_at(at2 - at);
                assert_eq!(parse(&[a, b1, b2]), whole, "split at {at} and {at2}");
            }
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(parse(&bytes), whole, "byte by byte");
        whole
    }

    #[test]
    fn events_split_across_chunks_at_every_position() {
        let stream = b"id: 01J0000000000000000000000\ndata: {\"w\":1,\"s\":2,\"t\":3}\n\n\
                       : ping\n\n\
                       data: {\"w\":1,\"s\":3,\"t\":4}\n\n";
        assert_eq!(
            parse_every_split(stream),
            ["{\"w\":1,\"s\":2,\"t\":3}", "{\"w\":1,\"s\":3,\"t\":4}"]
        );
    }

    #[test]
    fn crlf_and_cr_line_ends() {
        let stream = b"data: a\r\n\r\ndata: b\r\rdata: c\n\r\ndata: d\r\n\n";
        assert_eq!(parse_every_split(stream), ["a", "b", "c", "d"]);
    }

    #[test]
    fn multi_line_data_joins_with_lf() {
        let stream = b"data: one\ndata:two\ndata:  three\ndata\ndata:\n\n";
        assert_eq!(parse_every_split(stream), ["one\ntwo\n three\n\n"]);
        // A data line with an empty value is still an event.
        assert_eq!(parse_every_split(b"data:\n\ndata\n\n"), ["", ""]);
    }

    #[test]
    fn comments_pings_ids_and_other_fields_are_ignored() {
        let stream = b": hello\n\n:\n\nid: 7\n\nevent: ping\nretry: 10\n\nid: 8\nevent: message\nfoo: bar\n\
                       data: x\nid\n: inside\n\ndatas: y\n\n data: z\n\n";
        assert_eq!(parse_every_split(stream), ["x"]);
    }

    #[test]
    fn only_the_first_line_loses_a_bom() {
        assert_eq!(
            parse_every_split(b"\xEF\xBB\xBFdata: a\n\n\xEF\xBB\xBFdata: b\n\ndata: c\n\n"),
            ["a", "c"]
        );
    }

    #[test]
    fn an_unfinished_event_is_not_dispatched() {
        assert_eq!(parse(&[b"data: a\n\ndata: b\n", b"data: c"]), ["a"]);
        assert!(parse(&[b"data: a"]).is_empty());
    }

    /// A deterministic xorshift generator, so the randomized tests need no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// A random stream of lines from a small vocabulary, always ending with `\n`.
    fn random_stream(rng: &mut Rng) -> Vec<u8> {
        const LINES: [&str; 16] = [
            "data: {\"w\":1,\"s\":2,\"t\":3}",
            "data:x",
            "data",
            "data:",
            "data:  two spaces",
            "data: é ü 🦀",
            "id: 42",
            "id",
            "event: ping",
            "retry: 1000",
            ": comment",
            ":",
            "",
            "",
            "datax: y",
            "da:ta",
        ];
        const ENDS: [&str; 3] = ["\n", "\r\n", "\r"];
        // No BOM: `eventsource-stream` 0.2.3 panics on one (it slices the 3-byte char at 1).
        let mut out = Vec::new();
        for _ in 0..rng.below(30) {
            out.extend_from_slice(LINES[rng.below(LINES.len())].as_bytes());
            out.extend_from_slice(ENDS[rng.below(ENDS.len())].as_bytes());
        }
        // `eventsource-stream` waits for the byte after a final `\r`, which never comes.
        out.push(b'\n');
        out
    }

    /// What `eventsource-stream` (the client's previous parser) makes of `chunks`.
    fn reference(chunks: Vec<Vec<u8>>) -> Vec<String> {
        use eventsource_stream::Eventsource;
        use futures_util::StreamExt;
        let stream = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, std::convert::Infallible>));
        let events: Vec<_> = futures_util::FutureExt::now_or_never(stream.eventsource().collect::<Vec<_>>())
            .expect("the stream is ready");
        events.into_iter().map(|e| e.unwrap().data).collect()
    }

    #[test]
    fn agrees_with_eventsource_stream_on_random_streams() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..3000 {
            let stream = random_stream(&mut rng);
            let mut chunks = Vec::new();
            let mut rest = &stream[..];
            while !rest.is_empty() {
                let (chunk, more) = rest.split_at(1 + rng.below(rest.len().min(40)));
                chunks.push(chunk.to_vec());
                rest = more;
            }
            let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            assert_eq!(
                parse(&refs),
                reference(chunks.clone()),
                "stream {:?}",
                String::from_utf8_lossy(&stream)
            );
        }
    }
}
