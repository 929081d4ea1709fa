//! Held-out splits of the embedded 10,000 MNIST digits, shared by the trainer
//! (`kakusan train --holdout`), the evaluator (`kakusan eval`) and the likelihood bound
//! (`kakusan nll --heldout`), so that "held out" means the same digits everywhere.
//!
//! The digits are ordered round robin over the classes (assets/mnist/README.md), so any run
//! of ten consecutive indices holds one digit of each class (up to index ~8630).
//! - [`Holdout::Evaluator`]: every fifth round of ten, index i with (i / 10) mod 5 = 4 —
//!   2,000 class-balanced digits. The evaluator's digit classifier (assets/classifier) never
//!   trained on them, so a diffusion model trained with this split has a reference set for
//!   FID that NEITHER model saw. This is the split the GPU recipe uses.
//! - [`Holdout::Last`]`(n)`: the last n digits (indices len − n … len − 1). Simple to state,
//!   but the classifier trained on 4 in 5 of them: only n / 5 are unseen by both models.

use std::fmt;
use std::path::Path;

use crate::{Error, Result};

/// The file in a run (model) folder that records its split, written by `kakusan train
/// --holdout`; `kakusan eval --heldout` and `kakusan nll --heldout` read it.
pub const SPLIT_FILE: &str = "data_split.json";

/// Whether embedded digit `index` is in the evaluator's held-out split ((i / 10) mod 5 = 4).
pub fn evaluator_held_out(index: usize) -> bool {
    (index / 10) % 5 == 4
}

/// Which digits a training run leaves out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holdout {
    /// The evaluator's split: index i with (i / 10) mod 5 = 4.
    Evaluator,
    /// The last n digits.
    Last(usize),
}

impl Holdout {
    /// `eval` (the evaluator's split) or a count `N` (the last N digits).
    pub fn parse(s: &str) -> Result<Holdout> {
        let s = s.trim();
        if s == "eval" {
            return Ok(Holdout::Evaluator);
        }
        match s.parse::<usize>() {
            Ok(n) if n > 0 => Ok(Holdout::Last(n)),
            _ => Err(Error::Other(format!(
                "--holdout {s:?}: expected `eval` (the evaluator's 2,000 held-out digits) or a \
                 positive count N (the last N digits)"
            ))),
        }
    }

    /// Whether digit `index` of a dataset of `len` is held out.
    pub fn is_held_out(&self, index: usize, len: usize) -> bool {
        match *self {
            Holdout::Evaluator => evaluator_held_out(index),
            Holdout::Last(n) => index + n.min(len) >= len,
        }
    }

    /// (training indices, held-out indices) of a dataset of `len` images, both ascending.
    /// An error when either side would be empty.
    pub fn split(&self, len: usize) -> Result<(Vec<usize>, Vec<usize>)> {
        let (held, train): (Vec<usize>, Vec<usize>) =
            (0..len).partition(|&i| self.is_held_out(i, len));
        if train.is_empty() || held.is_empty() {
            return Err(Error::Other(format!(
                "--holdout {self}: of {len} images this leaves {} to train on and {} held out; \
                 both must be at least 1",
                train.len(),
                held.len()
            )));
        }
        Ok((train, held))
    }
}

/// The JSON recorded in [`SPLIT_FILE`] for a run on the embedded digits (`len` of them).
pub fn record_json(holdout: Holdout, len: usize) -> Result<String> {
    let (train, held) = holdout.split(len)?;
    let unseen = held.iter().filter(|&&i| evaluator_held_out(i)).count();
    let rule = match holdout {
        Holdout::Evaluator => "index i with (i / 10) % 5 == 4 (the evaluator's split)".to_string(),
        Holdout::Last(n) => format!("the last {n} indices"),
    };
    let v = serde_json::json!({
        "dataset": "embedded MNIST (assets/mnist/mnist10k.safetensors)",
        "holdout": holdout.to_string(),
        "held_out_rule": rule,
        "train_digits": train.len(),
        "held_out_digits": held.len(),
        "held_out_unseen_by_classifier": unseen,
    });
    serde_json::to_string_pretty(&v)
        .map(|t| t + "\n")
        .map_err(|e| Error::Other(e.to_string()))
}

/// The split recorded in `dir`'s [`SPLIT_FILE`]; None when the folder has none (a model
/// trained on all digits, like the shipped one).
pub fn read_recorded(dir: &Path) -> Result<Option<Holdout>> {
    let path = dir.join(SPLIT_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::file(path.display(), e)),
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::file(path.display(), e))?;
    let h = v
        .get("holdout")
        .and_then(|h| h.as_str())
        .ok_or_else(|| Error::file(path.display(), "no \"holdout\" string"))?;
    Holdout::parse(h)
        .map(Some)
        .map_err(|e| Error::file(path.display(), e))
}

impl fmt::Display for Holdout {
    /// The form `parse` reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holdout::Evaluator => write!(f, "eval"),
            Holdout::Last(n) => write!(f, "{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluator_split_is_the_classifiers_and_balanced() {
        let (train, held) = Holdout::Evaluator.split(10_000).unwrap();
        assert_eq!((train.len(), held.len()), (8000, 2000));
        assert_eq!(
            &held[..12],
            &[40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 90, 91]
        );
        assert!(held.iter().all(|&i| (i / 10) % 5 == 4));
        assert!(train.iter().all(|&i| (i / 10) % 5 != 4));
    }

    #[test]
    fn last_n_and_parse_round_trip() {
        let (train, held) = Holdout::Last(1000).split(10_000).unwrap();
        assert_eq!(train, (0..9000).collect::<Vec<_>>());
        assert_eq!(held, (9000..10_000).collect::<Vec<_>>());
        // Of the last 1,000, the classifier held out one round of ten in five: 200.
        assert_eq!(held.iter().filter(|&&i| evaluator_held_out(i)).count(), 200);
        for h in [Holdout::Evaluator, Holdout::Last(7)] {
            assert_eq!(Holdout::parse(&h.to_string()).unwrap(), h);
        }
        for bad in ["", "0", "-3", "all", "1.5"] {
            assert!(Holdout::parse(bad).is_err(), "{bad}");
        }
        assert!(Holdout::Last(10).split(10).is_err());
        let dir = std::env::temp_dir().join(format!("kakusan-split-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(read_recorded(&dir).unwrap(), None);
        let text = record_json(Holdout::Last(1000), 10_000).unwrap();
        assert!(
            text.contains("\"held_out_unseen_by_classifier\": 200"),
            "{text}"
        );
        std::fs::write(dir.join(SPLIT_FILE), text).unwrap();
        assert_eq!(read_recorded(&dir).unwrap(), Some(Holdout::Last(1000)));
        std::fs::write(dir.join(SPLIT_FILE), "{\"holdout\": \"most\"}").unwrap();
        assert!(read_recorded(&dir).is_err());
        std::fs::remove_dir_all(&dir).ok();
        assert!(Holdout::Evaluator.split(40).is_err());
    }
}
