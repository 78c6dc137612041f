//! The event trace of a run and its hash. FNV-1a (64 bit) is written out here rather than
//! taken from a crate so the hash of a seed can never change under a dependency bump.

/// Accumulates trace lines; prints them as they come when verbose (`SIM_SEED` replays).
#[derive(Debug)]
pub struct Trace {
    hash: u64,
    lines: u64,
    verbose: bool,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Trace {
    /// An empty trace.
    pub fn new(verbose: bool) -> Trace {
        Trace { hash: FNV_OFFSET, lines: 0, verbose }
    }

    /// Appends one line.
    pub fn line(&mut self, line: String) {
        for b in line.as_bytes().iter().chain(std::iter::once(&b'\n')) {
            self.hash ^= u64::from(*b);
            self.hash = self.hash.wrapping_mul(FNV_PRIME);
        }
        self.lines += 1;
        if self.verbose {
            println!("  {line}");
        }
    }

    /// The hash of every line so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// Lines so far.
    pub fn len(&self) -> u64 {
        self.lines
    }

    /// Whether no line was written.
    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }
}
