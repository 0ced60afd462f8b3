//! The MySQL/MariaDB source: dump scan.

use super::*;

/// How much of a dump's end is kept to find `-- Dump completed`.
pub(super) const TAIL_KEEP: usize = 512;
/// The longest table name the scanner follows (bytes, escaped).
pub(super) const NAME_MAX: usize = 1024;

#[derive(Debug)]
pub(super) enum ScanState {
    /// At a line's start, collecting its first bytes in `line`.
    Line,
    /// Ignoring the rest of a line.
    Skip,
    /// Inside the backquoted table name of `CREATE TABLE` or `INSERT`.
    Name { insert: bool, tick: bool },
    /// Between an `INSERT`'s table name and `VALUES`.
    Head { in_ident: bool, matched: usize },
    /// The row tuples of an `INSERT`, up to its `;`.
    Values {
        depth: u32,
        quote: Option<u8>,
        esc: bool,
    },
}

/// Follows a mysqldump stream as it passes: counts each table's rows and
/// keeps the stream's last bytes. Memory: the tail, one line start, and one
/// counter per table.
#[derive(Debug)]
pub(super) struct DumpScan {
    pub(super) state: ScanState,
    pub(super) line: Vec<u8>,
    pub(super) name: Vec<u8>,
    /// The `DELIMITER` is `;` (outside trigger, routine and event bodies).
    pub(super) plain_delimiter: bool,
    pub(super) table: String,
    pub(super) tables: BTreeMap<String, u64>,
    pub(super) tail: Vec<u8>,
    pub(super) eof: bool,
}

pub(super) const STATEMENTS: &[&[u8]] = &[
    b"INSERT INTO `",
    b"INSERT IGNORE INTO `",
    b"REPLACE INTO `",
    b"CREATE TABLE `",
];
pub(super) const DELIMITER: &[u8] = b"DELIMITER ";

impl DumpScan {
    pub(super) fn new() -> DumpScan {
        DumpScan {
            state: ScanState::Line,
            line: Vec::new(),
            name: Vec::new(),
            plain_delimiter: true,
            table: String::new(),
            tables: BTreeMap::new(),
            tail: Vec::new(),
            eof: false,
        }
    }

    pub(super) fn feed(&mut self, data: &[u8]) {
        if data.len() >= TAIL_KEEP {
            self.tail.clear();
            self.tail.extend_from_slice(&data[data.len() - TAIL_KEEP..]);
        } else {
            self.tail.extend_from_slice(data);
            if self.tail.len() > TAIL_KEEP {
                let cut = self.tail.len() - TAIL_KEEP;
                self.tail.drain(..cut);
            }
        }
        let mut i = 0;
        while i < data.len() {
            if let ScanState::Skip = self.state {
                match data[i..].iter().position(|&b| b == b'\n') {
                    Some(k) => {
                        i += k + 1;
                        self.state = ScanState::Line;
                        self.line.clear();
                    }
                    None => i = data.len(),
                }
                continue;
            }
            self.step(data[i]);
            i += 1;
        }
    }

    pub(super) fn step(&mut self, b: u8) {
        match &mut self.state {
            ScanState::Skip => {
                if b == b'\n' {
                    self.state = ScanState::Line;
                    self.line.clear();
                }
            }
            ScanState::Line => {
                if b == b'\n' {
                    if let Some(d) = self.line.strip_prefix(DELIMITER) {
                        self.plain_delimiter = d.trim_ascii() == b";";
                    }
                    self.line.clear();
                    return;
                }
                self.line.push(b);
                if self.line.len() <= DELIMITER.len() {
                    if DELIMITER.starts_with(&self.line) {
                        return;
                    }
                } else if self.line.starts_with(DELIMITER) {
                    if self.line.len() > 64 {
                        self.state = ScanState::Skip;
                    }
                    return;
                }
                if !self.plain_delimiter {
                    self.state = ScanState::Skip;
                    return;
                }
                let mut prefix = false;
                for (k, s) in STATEMENTS.iter().enumerate() {
                    if self.line[..] == s[..] {
                        self.name.clear();
                        self.state = ScanState::Name {
                            insert: k < 3,
                            tick: false,
                        };
                        return;
                    }
                    prefix |= s.starts_with(&self.line);
                }
                if !prefix {
                    self.state = ScanState::Skip;
                }
            }
            ScanState::Name { insert, tick } => {
                if b == b'`' {
                    if *tick {
                        self.name.push(b'`');
                        *tick = false;
                    } else {
                        *tick = true;
                    }
                    return;
                }
                if !*tick {
                    self.name.push(b);
                    if self.name.len() > NAME_MAX {
                        self.state = ScanState::Skip;
                    }
                    return;
                }
                // The name ended at the previous backquote.
                let name = String::from_utf8_lossy(&self.name).into_owned();
                let insert = *insert;
                self.tables.entry(name.clone()).or_insert(0);
                if insert {
                    self.table = name;
                    self.state = ScanState::Head {
                        in_ident: false,
                        matched: 0,
                    };
                    self.step(b);
                } else {
                    self.state = ScanState::Skip;
                    if b == b'\n' {
                        self.step(b);
                    }
                }
            }
            ScanState::Head { in_ident, matched } => {
                const VALUES: &[u8] = b"VALUES";
                if b == b'`' {
                    *in_ident = !*in_ident;
                    *matched = 0;
                } else if !*in_ident {
                    if b == b';' {
                        // Not a VALUES insert (INSERT ... SELECT): no rows to count.
                        self.state = ScanState::Skip;
                    } else if b == VALUES[*matched] {
                        *matched += 1;
                        if *matched == VALUES.len() {
                            self.state = ScanState::Values {
                                depth: 0,
                                quote: None,
                                esc: false,
                            };
                        }
                    } else {
                        *matched = usize::from(b == VALUES[0]);
                    }
                }
            }
            ScanState::Values { depth, quote, esc } => {
                if let Some(q) = *quote {
                    if *esc {
                        *esc = false;
                    } else if b == b'\\' {
                        *esc = true;
                    } else if b == q {
                        *quote = None;
                    }
                    return;
                }
                match b {
                    b'\'' | b'"' => *quote = Some(b),
                    b'(' => {
                        if *depth == 0 {
                            *self.tables.entry(self.table.clone()).or_insert(0) += 1;
                        }
                        *depth += 1;
                    }
                    b')' => *depth = depth.saturating_sub(1),
                    b';' if *depth == 0 => self.state = ScanState::Skip,
                    _ => {}
                }
            }
        }
    }

    /// The stream ended with mysqldump's last line.
    pub(super) fn complete(&self) -> bool {
        let t = self.tail.trim_ascii_end();
        let last = match t.iter().rposition(|&b| b == b'\n') {
            Some(k) => &t[k + 1..],
            None => t,
        };
        last.starts_with(b"-- Dump completed")
    }
}

/// Passes a dump through, showing every byte to a [`DumpScan`].
pub(super) struct ScanReader<R> {
    pub(super) inner: R,
    pub(super) scan: Arc<Mutex<DumpScan>>,
}

impl<R: Read> Read for ScanReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut s = self.scan.lock().unwrap_or_else(|e| e.into_inner());
        if n == 0 {
            s.eof = true;
        } else {
            s.feed(&buf[..n]);
        }
        Ok(n)
    }
}

pub(super) const INCOMPLETE: &str = "its output does not end with the `-- Dump completed` line that the dump tool writes last, so the dump is incomplete";
