//! Fault injection for the reliability tests (`../shared/RELIABILITY.md`, catalogue 9: a
//! panic in the queue writer mid-message).
//!
//! `OXIPOST_FAULTS=name[,name...]` in a process's environment makes each named point panic
//! the first time an armed holder reaches it. The variable is read when the holder is
//! created (a spool writer when it opens), so a test arms one writer, not the process for
//! good; unset, a point costs one empty-vector check.

/// The points one holder (a spool writer) has armed and not yet reached.
#[derive(Debug, Default)]
pub struct Faults(pub(crate) Vec<String>);

impl Faults {
    /// The points `OXIPOST_FAULTS` names now.
    pub fn from_env() -> Faults {
        let names = std::env::var("OXIPOST_FAULTS").unwrap_or_default();
        Faults(
            names
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(String::from)
                .collect(),
        )
    }

    /// Panics if `name` is armed (once: the point is disarmed first).
    pub fn point(&mut self, name: &str) {
        if self.0.is_empty() {
            return;
        }
        if let Some(i) = self.0.iter().position(|n| n == name) {
            self.0.swap_remove(i);
            panic!("fault injected at {name} (OXIPOST_FAULTS)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Faults;

    #[test]
    fn an_armed_point_panics_once() {
        let mut faults = Faults(vec!["a".into(), "b".into()]);
        faults.point("c");
        assert!(
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| faults.point("a"))).is_err()
        );
        faults.point("a");
        assert!(
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| faults.point("b"))).is_err()
        );
    }
}
