//! A per-thread memory of yes/no answers about short strings, for the tests that run on every
//! input row (is this RemoteUrl relevant, is this host a look-alike). Input values repeat
//! heavily (a few tens of thousands of host names make up most rows), so most rows are answered
//! by one hash and one comparison instead of a parse.
//!
//! Direct-mapped and per thread: no locks, a bounded footprint (about 4.5 MiB per thread), and an
//! evicted answer is merely worked out again. A slot holds the whole value, so a hit is exact
//! whatever an attacker makes the hash do.

use std::cell::RefCell;
use std::hash::Hasher;
use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Clone, Copy)]
struct Answer {
    owner: u32,
    len: u8,
    yes: bool,
    value: [u8; Answer::MAX_VALUE],
}

impl Answer {
    const MAX_VALUE: usize = 58;
    const SLOTS: usize = 1 << 16;
    const EMPTY: Answer = Answer { owner: 0, len: 0, yes: false, value: [0; Answer::MAX_VALUE] };
}

thread_local! {
    static ANSWERS: RefCell<Vec<Answer>> = const { RefCell::new(Vec::new()) };
}

static NEXT_OWNER: AtomicU32 = AtomicU32::new(1);

/// One question asked of the memory: answers of different questions (or of differently
/// configured matchers) never mix. Clones ask the same question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Question(u32);

impl Question {
    pub fn new() -> Question {
        Question(NEXT_OWNER.fetch_add(1, Ordering::Relaxed))
    }

    /// The remembered answer for `value`, else `decide()` (remembered for next time). Values
    /// longer than a slot are always decided afresh.
    #[inline]
    pub fn answer(self, value: &[u8], decide: impl FnOnce() -> bool) -> bool {
        if value.len() > Answer::MAX_VALUE {
            return decide();
        }
        let mut hasher = rustc_hash::FxHasher::default();
        hasher.write(value);
        let slot = hasher.finish() as usize % Answer::SLOTS;
        let remembered = ANSWERS.with(|answers| {
            let answers = answers.borrow();
            let a = answers.get(slot)?;
            (a.owner == self.0 && usize::from(a.len) == value.len() && &a.value[..value.len()] == value)
                .then_some(a.yes)
        });
        if let Some(yes) = remembered {
            return yes;
        }
        let yes = decide();
        ANSWERS.with(|answers| {
            let mut answers = answers.borrow_mut();
            if answers.is_empty() {
                answers.resize(Answer::SLOTS, Answer::EMPTY);
            }
            let mut answer = Answer { owner: self.0, len: value.len() as u8, yes, value: [0; Answer::MAX_VALUE] };
            answer.value[..value.len()].copy_from_slice(value);
            answers[slot] = answer;
        });
        yes
    }
}

impl Default for Question {
    fn default() -> Self {
        Question::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_remembered_per_question_and_exact() {
        let (long, short) = (Question::new(), Question::new());
        let asked = std::cell::Cell::new(0);
        let is_long = |q: Question, v: &str| {
            q.answer(v.as_bytes(), || {
                asked.set(asked.get() + 1);
                v.len() > 3
            })
        };
        assert!(is_long(long, "abcd"));
        assert!(is_long(long, "abcd"));
        assert_eq!(asked.get(), 1, "the second time is remembered");
        assert!(!is_long(long, "abc"));
        assert!(is_long(short, "abcd"));
        assert_eq!(asked.get(), 3, "another question does not see the first one's answers");
        let huge = "x".repeat(Answer::MAX_VALUE + 1);
        assert!(is_long(long, &huge));
        assert!(is_long(long, &huge));
        assert_eq!(asked.get(), 5, "values longer than a slot are never remembered");
    }
}
