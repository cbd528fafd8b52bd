//! Reading newline-delimited messages with a cap on line length. A line over the cap is skipped
//! (and reported), never buffered whole, and the reader carries on with the next line.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// One line from the reader.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line, without its newline.
    Complete(Vec<u8>),
    /// A line longer than the cap; its bytes were discarded.
    TooLong {
        /// How long it was.
        len: usize,
    },
}

/// Reads lines of at most `max` bytes. [`LineReader::next_line`] is cancel-safe: all state lives
/// in the reader, so it can sit in a `select!` loop.
pub struct LineReader<R> {
    inner: R,
    max: usize,
    buf: Vec<u8>,
    /// Length so far of an over-long line being skipped.
    discarded: Option<usize>,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    /// Wraps a buffered reader.
    pub fn new(inner: R, max: usize) -> Self {
        Self { inner, max, buf: Vec::new(), discarded: None }
    }

    /// The next line, or `None` at end of input. A last line without a newline is returned too.
    pub async fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                return Ok(match self.discarded.take() {
                    Some(len) => Some(Line::TooLong { len }),
                    None if self.buf.is_empty() => None,
                    None => Some(Line::Complete(std::mem::take(&mut self.buf))),
                });
            }
            let (chunk, used, done) = match memchr::memchr(b'\n', available) {
                Some(pos) => (&available[..pos], pos + 1, true),
                None => (available, available.len(), false),
            };
            match &mut self.discarded {
                Some(len) => *len += chunk.len(),
                None if self.buf.len() + chunk.len() > self.max => {
                    self.discarded = Some(self.buf.len() + chunk.len());
                    self.buf = Vec::new();
                }
                None => self.buf.extend_from_slice(chunk),
            }
            self.inner.consume(used);
            if done {
                return Ok(Some(match self.discarded.take() {
                    Some(len) => Line::TooLong { len },
                    None => Line::Complete(std::mem::take(&mut self.buf)),
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::BufReader;

    async fn all(input: &[u8], max: usize, buf_cap: usize) -> Vec<Line> {
        let mut r = LineReader::new(BufReader::with_capacity(buf_cap, input), max);
        let mut out = Vec::new();
        while let Some(line) = r.next_line().await.unwrap() {
            out.push(line);
        }
        out
    }

    #[tokio::test]
    async fn splits_lines_and_skips_long_ones() {
        let input = b"ab\n0123456789\ncd\nlast";
        for cap in [1, 3, 64] {
            assert_eq!(
                all(input, 5, cap).await,
                vec![
                    Line::Complete(b"ab".to_vec()),
                    Line::TooLong { len: 10 },
                    Line::Complete(b"cd".to_vec()),
                    Line::Complete(b"last".to_vec()),
                ],
                "buffer capacity {cap}"
            );
        }
    }

    #[tokio::test]
    async fn exact_limit_is_accepted_and_empty_lines_kept() {
        assert_eq!(all(b"12345\n\n", 5, 2).await, vec![Line::Complete(b"12345".to_vec()), Line::Complete(Vec::new())]);
    }

    /// What the reader must yield: the input split at new lines, a last line without one
    /// included, each over `max` reported by its length.
    fn plain_split(input: &[u8], max: usize) -> Vec<Line> {
        let mut parts: Vec<&[u8]> = input.split(|b| *b == b'\n').collect();
        // After a final new line (or in no input) the split has an empty part that is no line.
        if input.last().is_none_or(|b| *b == b'\n') {
            parts.pop();
        }
        parts
            .into_iter()
            .map(|p| if p.len() > max { Line::TooLong { len: p.len() } } else { Line::Complete(p.to_vec()) })
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Any bytes, any cap, any buffer size: the lines of a plain split, never a panic.
        #[test]
        fn any_input_reads_as_its_lines(
            input in proptest::collection::vec(proptest::prop_oneof![3 => proptest::prelude::any::<u8>(), 1 => proptest::strategy::Just(b'\n')], 0..300),
            max in 0usize..40,
            buf_cap in 1usize..48,
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let got = runtime.block_on(all(&input, max, buf_cap));
            proptest::prop_assert_eq!(got, plain_split(&input, max));
        }
    }
}
