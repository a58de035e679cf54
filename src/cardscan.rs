//! Finds card numbers in free text (leaf module). A caller may put a PAN where none
//! belongs — in a reason, in metadata, in place of a token — written with spaces or
//! dashes as people write them. What this finds is refused or removed before it is
//! stored anywhere.

/// The Luhn check over ASCII digits.
pub fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut n = u32::from(d - b'0');
        if i % 2 == 1 {
            n *= 2;
            if n > 9 {
                n -= 9;
            }
        }
        sum += n;
    }
    sum.is_multiple_of(10)
}

/// Whether `text` holds a card number: a run of 12–19 digits that passes Luhn, either as
/// written or once the spaces and dashes between digits are removed. (Windows inside
/// longer runs are not searched: most long numbers would match one by chance.)
pub fn contains_pan(text: &str) -> bool {
    any_pan(text, |_| true)
}

/// Whether `text` holds a card number (as [`contains_pan`] finds them) for which `judge`,
/// given its digits, says yes.
pub fn any_pan(text: &str, judge: impl Fn(&[u8]) -> bool) -> bool {
    let is_pan = |d: &[u8]| (12..=19).contains(&d.len()) && luhn_valid(d) && judge(d);
    digit_runs(text).any(|run| is_pan(&run))
        || text.as_bytes().split(|b| !b.is_ascii_digit()).any(is_pan)
}

/// Whether `text` holds any run of `min` or more digits, spaces and dashes between
/// digits removed (a stricter screen for short free text such as a reason).
pub fn has_digit_run(text: &str, min: usize) -> bool {
    digit_runs(text).any(|run| run.len() >= min)
}

/// Runs of digits, joined across a single space or dash between groups of three or more
/// digits — the way card numbers are written (4-4-4-4, 4-6-5, 4-4-4-4-3), and not the way
/// identifiers such as `t-29536-36-17966` or dates are.
/// Each run is copied out only when it is looked at, into a buffer of its exact size that
/// is cleared when dropped (the text may be a card number).
fn digit_runs(text: &str) -> impl Iterator<Item = zeroize::Zeroizing<Vec<u8>>> + '_ {
    let bytes = text.as_bytes();
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            groups.push((start, i));
        } else {
            i += 1;
        }
    }
    let mut runs: Vec<Vec<(usize, usize)>> = Vec::new();
    let mut prev: Option<(usize, usize)> = None;
    for (start, end) in groups {
        let joins = prev.is_some_and(|(ps, pe)| {
            start == pe + 1 && matches!(bytes[pe], b' ' | b'-') && pe - ps >= 3 && end - start >= 3
        });
        match runs.last_mut() {
            Some(run) if joins => run.push((start, end)),
            _ => runs.push(vec![(start, end)]),
        }
        prev = Some((start, end));
    }
    runs.into_iter().map(move |parts| {
        let len = parts.iter().map(|(s, e)| e - s).sum();
        let mut run = zeroize::Zeroizing::new(Vec::with_capacity(len));
        for (s, e) in parts {
            run.extend_from_slice(&bytes[s..e]);
        }
        run
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_matches_known_numbers() {
        assert!(luhn_valid(b"4111111111111111"));
        assert!(luhn_valid(b"79927398713"));
        assert!(!luhn_valid(b"4111111111111112"));
    }

    #[test]
    fn card_numbers_are_found_however_they_are_written() {
        for text in [
            "4111111111111111",
            "refund 4111 1111 1111 1111 please",
            "4111-1111-1111-1111",
            "card:378282246310005.",
            "x5555555555554444x",
            "qty 2 4111111111111111",
            "tok_4111111111111111x",
        ] {
            assert!(contains_pan(text), "{text}");
        }
        for text in [
            "order 12345",
            "4111111111111112",
            "2026-12-01 10:00",
            "t-kekrot-29536-36-17966f75-kek-1",
            "",
        ] {
            assert!(!contains_pan(text), "{text}");
        }
        assert!(has_digit_run("a 1234 5678 9012 b", 12));
        assert!(!has_digit_run("a 1234 5678 b 9012", 12));
    }
}
