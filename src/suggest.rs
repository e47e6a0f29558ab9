//! "Did you mean": the candidate name nearest to a misspelled one.

/// The candidate nearest to `name`, if it is near enough to be a likely typo.
pub fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a String>) -> Option<String> {
    let lowered = name.to_lowercase();
    candidates
        .map(|c| (strsim::damerau_levenshtein(&lowered, &c.to_lowercase()), c))
        .filter(|(distance, c)| *distance <= (c.chars().count() / 3).max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c.clone())
}
