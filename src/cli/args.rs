//! Argument grammars and groups shared by the commands: one grammar for
//! sizes, one for durations, one for counts, so that `build --timeout 10m`,
//! `run --timeout 10m` and `push --chunk-size 16M` read alike
//! (docs/cli.md), and the step options of `build`, `reproduce` and
//! `bootstrap`.

use std::time::Duration;

/// How build steps run: shared by `build`, `reproduce` and `bootstrap`.
#[derive(Debug, clap::Args)]
pub struct StepArgs {
    /// Build up to N independent packages at once.
    #[arg(short, long, default_value_t = 1, value_name = "N")]
    pub jobs: usize,
    /// Memory limit of each step: bytes, or with a K, M, G or T suffix
    /// (powers of 1024).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub memory: Option<u64>,
    /// Maximum number of processes of each step.
    #[arg(long, value_parser = parse_count, value_name = "N")]
    pub pids: Option<u64>,
    /// Kill a package's steps when together they run longer than this:
    /// seconds, or with an ms, s, m or h unit.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
}

impl StepArgs {
    pub fn limits(&self) -> sandbox::Limits {
        sandbox::Limits {
            memory: self.memory,
            pids: self.pids,
            cpus: None,
        }
    }
}

/// A size in bytes: `4096`, or a number with a K, M, G or T suffix (powers
/// of 1024, either case): `512K`, `64M`, `1T`. At least 1.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, shift) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 10),
        Some((i, 'm' | 'M')) => (&t[..i], 20),
        Some((i, 'g' | 'G')) => (&t[..i], 30),
        Some((i, 't' | 'T')) => (&t[..i], 40),
        _ => (t, 0),
    };
    let n: u64 = num.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
        format!(
            "invalid size {s:?}: expected a positive integer with an optional K, M, G or T suffix"
        )
    })?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// A duration: seconds (`90`, `1.5`), or a number with an ms, s, m or h
/// unit (`250ms`, `10m`, `2h`). More than zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = t
        .find(|c: char| c.is_ascii_alphabetic())
        .map_or((t, "s"), |i| (&t[..i], &t[i..]));
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n > 0.0)
        .ok_or_else(|| {
            format!("invalid duration {s:?}: expected a positive number with an optional ms, s, m or h unit")
        })?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "invalid duration {s:?}: unknown unit {unit:?} (expected ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(n * scale).map_err(|_| format!("duration {s:?} is too long"))
}

/// A count of at least 1 (processes, jobs).
pub fn parse_count(s: &str) -> Result<u64, String> {
    s.trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("invalid count {s:?}: expected a positive integer"))
}

/// A CPU quota in CPUs, at least 0.01: `0.5`, `2`.
pub fn parse_cpus(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|c| c.is_finite() && *c >= 0.01)
        .ok_or_else(|| {
            format!("invalid CPU quota {s:?}: expected a number of CPUs of at least 0.01")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        for bad in ["12QB", "0", "-1G", "", "M", "1.5G", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["5 days", "5days", "0", "-1", "m", "1e400"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn counts_and_cpus() {
        assert_eq!(parse_count("32"), Ok(32));
        assert!(parse_count("0").is_err() && parse_count("many").is_err());
        assert_eq!(parse_cpus("0.5"), Ok(0.5));
        assert!(parse_cpus("-1").is_err() && parse_cpus("0").is_err());
    }
}
