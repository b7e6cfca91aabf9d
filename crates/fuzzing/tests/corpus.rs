//! Every fuzz target over its committed corpus (`fuzz/corpus/<target>/`, seeded
//! from the schemas' samples and the test logs, plus every input a coverage-guided
//! run found worth keeping), then over a bounded number of random mutations of it:
//! the short run of the README's test command, on the stable toolchain. The
//! mutations come from a seed, printed first (set `FUZZ_SEED` to replay one);
//! `FUZZ_MUTATIONS` sets how many per target (default 300).

use std::path::{Path, PathBuf};

use master_events_fuzzing::TARGETS;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus {} is readable: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_default();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_target_holds_its_promises_over_its_whole_corpus() {
    for (name, target) in TARGETS {
        let files = corpus(name);
        assert!(
            files.len() >= 5,
            "the corpus of {name} has seeds: {}",
            files.len()
        );
        for (path, bytes) in files {
            let outcome = std::panic::catch_unwind(|| target(&bytes));
            assert!(
                outcome.is_ok(),
                "{name}: {} breaks a promise",
                path.display()
            );
        }
    }
}

/// A small xorshift generator: the mutations depend on the seed only.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One random edit of `input`: a byte flipped, set to an interesting value,
/// inserted, removed, or a slice duplicated; or a splice with `other`.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8]) {
    const INTERESTING: &[u8] = b"\0\n\r\"\\{}[]:,-0123456789eE.+ \x7f\xff\xc3\xa9";
    let at = rng.below(input.len() + 1);
    match rng.below(6) {
        0 if !input.is_empty() => {
            let i = rng.below(input.len());
            input[i] ^= 1 << rng.below(8);
        }
        1 if !input.is_empty() => {
            let i = rng.below(input.len());
            input[i] = INTERESTING[rng.below(INTERESTING.len())];
        }
        2 => input.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
        3 if !input.is_empty() => {
            let i = rng.below(input.len());
            let n = rng.below(input.len() - i) + 1;
            input.drain(i..i + n.min(8));
        }
        4 if !input.is_empty() => {
            let i = rng.below(input.len());
            let n = (rng.below(input.len() - i) + 1).min(64);
            let slice: Vec<u8> = input[i..i + n].to_vec();
            input.splice(at..at, slice);
        }
        _ => {
            let cut = rng.below(other.len() + 1);
            input.truncate(at);
            input.extend_from_slice(&other[cut..]);
        }
    }
}

#[test]
fn every_target_holds_its_promises_over_random_mutations_of_its_corpus() {
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
        .max(1);
    let mutations: usize = std::env::var("FUZZ_MUTATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    println!("seed {seed} (replay with FUZZ_SEED={seed}), {mutations} mutations per target");
    let mut rng = Rng(seed);
    for (name, target) in TARGETS {
        let files: Vec<Vec<u8>> = corpus(name).into_iter().map(|(_, b)| b).collect();
        for _ in 0..mutations {
            let mut input = files[rng.below(files.len())].clone();
            let other = &files[rng.below(files.len())];
            for _ in 0..=rng.below(4) {
                mutate(&mut rng, &mut input, other);
            }
            input.truncate(64 * 1024);
            let outcome = std::panic::catch_unwind(|| target(&input));
            assert!(
                outcome.is_ok(),
                "seed {seed}: {name} breaks a promise on {:?}",
                String::from_utf8_lossy(&input)
            );
        }
    }
}
