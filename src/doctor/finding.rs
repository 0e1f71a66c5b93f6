//! What `doctor` found: one verdict and line per finding, the summary line and the exit code (see
//! "Doctor" in docs/behaviour.md).

use std::fmt;

/// How a finding is judged. `Warn` and `Fail` are problems (exit 1); `Ok` and `Info` are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Checked and as it should be.
    Ok,
    /// A fact worth knowing that is not a problem.
    Info,
    /// Works, but likely not as intended, or cannot be confirmed.
    Warn,
    /// Does not work as configured.
    Fail,
}

impl Verdict {
    fn tag(self) -> &'static str {
        match self {
            Verdict::Ok => "[ok]",
            Verdict::Info => "[info]",
            Verdict::Warn => "[warn]",
            Verdict::Fail => "[fail]",
        }
    }

    /// Whether the finding counts against the set-up.
    pub fn is_problem(self) -> bool {
        matches!(self, Verdict::Warn | Verdict::Fail)
    }
}

/// One finding about one machine: what was found and, for a problem, what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub verdict: Verdict,
    pub text: String,
    pub advice: Option<String>,
}

impl Finding {
    pub fn new(verdict: Verdict, text: impl Into<String>) -> Self {
        Finding {
            verdict,
            text: text.into(),
            advice: None,
        }
    }

    pub fn ok(text: impl Into<String>) -> Self {
        Self::new(Verdict::Ok, text)
    }

    pub fn info(text: impl Into<String>) -> Self {
        Self::new(Verdict::Info, text)
    }

    pub fn warn(text: impl Into<String>) -> Self {
        Self::new(Verdict::Warn, text)
    }

    pub fn fail(text: impl Into<String>) -> Self {
        Self::new(Verdict::Fail, text)
    }

    /// The same finding with what to do about it.
    pub fn advice(mut self, advice: impl Into<String>) -> Self {
        self.advice = Some(advice.into());
        self
    }

    /// The finding's line for machine `backend`.
    pub fn line<'a>(&'a self, backend: &'a str) -> Line<'a> {
        Line {
            backend,
            finding: self,
        }
    }
}

/// A finding as printed: `[warn] desktop: what was found: what to do`.
pub struct Line<'a> {
    backend: &'a str,
    finding: &'a Finding,
}

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Finding {
            verdict,
            text,
            advice,
        } = self.finding;
        write!(f, "{:<6} {}: {text}", verdict.tag(), self.backend)?;
        match advice {
            // A finding that ends in a question reads on with its advice.
            Some(a) if text.ends_with('?') => write!(f, " {a}"),
            Some(a) => write!(f, ": {a}"),
            None => Ok(()),
        }
    }
}

/// The last line: how many machines were checked and what was wrong.
pub fn summary<'a>(machines: usize, findings: impl Iterator<Item = &'a Finding>) -> String {
    let (mut warns, mut fails) = (0, 0);
    for f in findings {
        match f.verdict {
            Verdict::Warn => warns += 1,
            Verdict::Fail => fails += 1,
            Verdict::Ok | Verdict::Info => {}
        }
    }
    let checked = match machines {
        1 => "1 machine checked".to_string(),
        n => format!("{n} machines checked"),
    };
    let plural = |n: usize, one: &str| match n {
        1 => format!("1 {one}"),
        n => format!("{n} {one}s"),
    };
    match (fails, warns) {
        (0, 0) => format!("doctor: {checked}: nothing wrong found"),
        _ => format!(
            "doctor: {checked}: {}, {}",
            plural(fails, "failure"),
            plural(warns, "warning")
        ),
    }
}

/// 0 when nothing is wrong, 1 with problems.
pub fn exit_code<'a>(mut findings: impl Iterator<Item = &'a Finding>) -> u8 {
    u8::from(findings.any(|f| f.verdict.is_problem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_line_up_and_carry_the_advice() {
        let ok = Finding::ok("Ollama 0.12.6 reachable at http://192.168.1.20:11434 (12 ms)");
        assert_eq!(
            ok.line("desktop").to_string(),
            "[ok]   desktop: Ollama 0.12.6 reachable at http://192.168.1.20:11434 (12 ms)"
        );
        let warn = Finding::warn("no cache file").advice("set CACHE_FILE");
        assert_eq!(
            warn.line("a").to_string(),
            "[warn] a: no cache file: set CACHE_FILE"
        );
        let asks = Finding::warn("is it the Wi-Fi card's?").advice("use the wired one");
        assert_eq!(
            asks.line("a").to_string(),
            "[warn] a: is it the Wi-Fi card's? use the wired one"
        );
        assert!(Finding::info("x")
            .line("b")
            .to_string()
            .starts_with("[info] b: "));
        assert!(Finding::fail("x")
            .line("b")
            .to_string()
            .starts_with("[fail] b: "));
    }

    #[test]
    fn summary_and_exit_code_count_problems_only() {
        let healthy = [Finding::ok("a"), Finding::info("b")];
        assert_eq!(
            summary(1, healthy.iter()),
            "doctor: 1 machine checked: nothing wrong found"
        );
        assert_eq!(exit_code(healthy.iter()), 0);
        let sick = [
            Finding::ok("a"),
            Finding::warn("b"),
            Finding::fail("c"),
            Finding::fail("d"),
        ];
        assert_eq!(
            summary(2, sick.iter()),
            "doctor: 2 machines checked: 2 failures, 1 warning"
        );
        assert_eq!(exit_code(sick.iter()), 1);
        assert_eq!(exit_code([Finding::warn("w")].iter()), 1);
    }
}
