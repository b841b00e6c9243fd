//! Quantity parsing for `resources`: CPU (cores or millicores) and memory (bytes with SI or
//! binary units). Pure string/number arithmetic; owns the unit tables and the limits. Errors
//! are messages for a `SpecIssue` (lowercase, say what to do); the caller adds the location.

use super::raw::Quantity;

/// Smallest memory limit berth accepts: Docker's own minimum (6 MiB); anything lower would be
/// refused by the engine at create time, long after the spec was accepted.
pub const MIN_MEMORY_BYTES: u64 = 6 * 1024 * 1024;
/// Largest memory limit: 1024Ti.
pub const MAX_MEMORY_BYTES: u64 = 1 << 50;
/// Largest CPU limit: 1024 cores.
pub const MAX_CPU_MILLIS: u32 = 1024 * 1000;

/// A non-negative decimal `int.frac` parsed exactly: value = int + frac / 10^digits.
struct Decimal {
    int: u128,
    frac: u128,
    digits: u32,
}

fn parse_decimal(s: &str) -> Option<Decimal> {
    let (int_part, frac_part) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    // Bounded lengths keep the u128 arithmetic below far from overflow.
    if int_part.len() > 20 || frac_part.len() > 18 {
        return None;
    }
    if !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    if s.contains('.') && frac_part.is_empty() {
        return None;
    }
    let int = if int_part.is_empty() {
        0
    } else {
        int_part.parse().ok()?
    };
    let frac = if frac_part.is_empty() {
        0
    } else {
        frac_part.parse().ok()?
    };
    Some(Decimal {
        int,
        frac,
        digits: frac_part.len() as u32,
    })
}

/// Exact `d * mult`, or None when it is not a whole number.
fn scale_exact(d: &Decimal, mult: u128) -> Option<u128> {
    let den = 10u128.pow(d.digits);
    let frac = d.frac.checked_mul(mult)?;
    if frac % den != 0 {
        return None;
    }
    d.int.checked_mul(mult)?.checked_add(frac / den)
}

const CPU_HELP: &str = "use cores like 0.5 or 2, or millicores like \"500m\"";

/// CPU in thousandths of a core: `0.5`, `"0.5"` and `"500m"` all give 500.
pub fn cpu_millis(q: &Quantity) -> Result<u32, String> {
    let millis: u128 = match q {
        Quantity::Integer(n) => {
            if *n <= 0 {
                return Err(format!("cpu must be greater than 0, got {n}: {CPU_HELP}"));
            }
            (*n as u128).saturating_mul(1000)
        }
        Quantity::Float(x) => {
            if !x.is_finite() || *x <= 0.0 {
                return Err(format!("cpu must be greater than 0, got {x}: {CPU_HELP}"));
            }
            let m = x * 1000.0;
            if (m - m.round()).abs() > 1e-6 {
                return Err(format!(
                    "cpu {x} is finer than 1m (0.001 core): use at most 3 decimals"
                ));
            }
            if m > f64::from(MAX_CPU_MILLIS) {
                u128::MAX
            } else {
                m.round() as u128
            }
        }
        Quantity::Text(s) => {
            let t = s.trim();
            if let Some(num) = t.strip_suffix('m') {
                if num.is_empty() || num.len() > 20 || !num.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!("cpu `{s}` is not a valid quantity: {CPU_HELP}"));
                }
                num.parse::<u128>().unwrap_or(u128::MAX)
            } else {
                let d = parse_decimal(t)
                    .ok_or_else(|| format!("cpu `{s}` is not a valid quantity: {CPU_HELP}"))?;
                scale_exact(&d, 1000).ok_or_else(|| {
                    format!("cpu `{s}` is finer than 1m (0.001 core): use at most 3 decimals")
                })?
            }
        }
    };
    if millis == 0 {
        return Err(format!("cpu must be greater than 0, got {q}: {CPU_HELP}"));
    }
    if millis > u128::from(MAX_CPU_MILLIS) {
        return Err(format!(
            "cpu {q} is more than the maximum of 1024 cores: lower it"
        ));
    }
    Ok(millis as u32)
}

const MEMORY_HELP: &str =
    "use bytes or a number with a unit (k, M, G, T or Ki, Mi, Gi, Ti), e.g. 512Mi";

fn unit_multiplier(unit: &str) -> Option<u128> {
    Some(match unit {
        "" => 1,
        "k" | "K" => 1000,
        "M" => 1000u128.pow(2),
        "G" => 1000u128.pow(3),
        "T" => 1000u128.pow(4),
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    })
}

/// A log file size (`logging.maxSize`) in bytes, same units as memory; 1Ki to 1Ti.
pub fn log_size_bytes(q: &Quantity) -> Result<u64, String> {
    let bytes = bytes_of(q, "maxSize")?;
    if !(1024..=(1u128 << 40)).contains(&bytes) {
        return Err(format!(
            "maxSize {q} must lie between 1Ki and 1Ti: write a size like 10Mi"
        ));
    }
    Ok(bytes as u64)
}

/// A byte quantity (`512Mi`, `1G`, an integer) as bytes; `what` names it in errors.
fn bytes_of(q: &Quantity, what: &str) -> Result<u128, String> {
    let bytes: u128 = match q {
        Quantity::Integer(n) => {
            if *n < 0 {
                return Err(format!(
                    "{what} must not be negative, got {n}: {MEMORY_HELP}"
                ));
            }
            *n as u128
        }
        Quantity::Float(x) => {
            if !x.is_finite() || *x < 0.0 || x.fract() != 0.0 {
                return Err(format!(
                    "{what} {x} is not a whole number of bytes: {MEMORY_HELP}"
                ));
            }
            if *x > MAX_MEMORY_BYTES as f64 {
                u128::MAX
            } else {
                *x as u128
            }
        }
        Quantity::Text(s) => {
            let t = s.trim();
            let split = t
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(t.len());
            let (num, unit) = t.split_at(split);
            if unit == "m" || unit == "mi" {
                return Err(format!(
                    "{what} `{s}`: lowercase m means milli; use Mi (mebibytes) or M (megabytes)"
                ));
            }
            let mult = unit_multiplier(unit).ok_or_else(|| {
                format!("{what} `{s}` has an unknown unit `{unit}`: {MEMORY_HELP}")
            })?;
            let d = parse_decimal(num)
                .ok_or_else(|| format!("{what} `{s}` is not a valid quantity: {MEMORY_HELP}"))?;
            match scale_exact(&d, mult) {
                Some(b) => b,
                None => {
                    return Err(format!(
                        "{what} `{s}` is not a whole number of bytes: use fewer decimals or a smaller unit"
                    ))
                }
            }
        }
    };
    Ok(bytes)
}

/// Memory in bytes. `k K M G T` are powers of 1000, `Ki Mi Gi Ti` powers of 1024 (the
/// Kubernetes convention). Lowercase `m` is refused: in Kubernetes it means milli.
pub fn memory_bytes(q: &Quantity) -> Result<u64, String> {
    let bytes = bytes_of(q, "memory")?;
    if bytes < u128::from(MIN_MEMORY_BYTES) {
        return Err(format!(
            "memory {q} is below the minimum of 6Mi (6291456 bytes, Docker's lower limit): raise it"
        ));
    }
    if bytes > u128::from(MAX_MEMORY_BYTES) {
        return Err(format!(
            "memory {q} is more than the maximum of 1024Ti: lower it"
        ));
    }
    Ok(bytes as u64)
}

/// A request body limit (`route.maxBodySize`): 0 (no limit is not offered) .. 1Gi.
pub fn body_size_bytes(q: &Quantity) -> Result<u64, String> {
    let bytes = bytes_of(q, "maxBodySize")?;
    if bytes == 0 || bytes > 1 << 30 {
        return Err(format!(
            "maxBodySize {q} must be between 1 byte and 1Gi: use a size like 10Mi"
        ));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Quantity {
        Quantity::Text(s.to_string())
    }

    #[test]
    fn cpu_accepts_cores_and_millicores() {
        let cases: &[(Quantity, u32)] = &[
            (Quantity::Float(0.5), 500),
            (Quantity::Float(0.001), 1),
            (Quantity::Float(1.25), 1250),
            (Quantity::Integer(2), 2000),
            (text("500m"), 500),
            (text("0.5"), 500),
            (text(".5"), 500),
            (text("2"), 2000),
            (text("1m"), 1),
            (text("1024"), 1_024_000),
        ];
        for (q, want) in cases {
            assert_eq!(cpu_millis(q), Ok(*want), "{q:?}");
        }
    }

    #[test]
    fn cpu_rejects_bad_values() {
        let cases: &[(Quantity, &str)] = &[
            (Quantity::Float(0.0), "greater than 0"),
            (Quantity::Integer(-1), "greater than 0"),
            (Quantity::Float(-0.5), "greater than 0"),
            (Quantity::Float(0.0005), "finer than 1m"),
            (Quantity::Float(f64::NAN), "greater than 0"),
            (text("0m"), "greater than 0"),
            (text("0.0001"), "finer than 1m"),
            (text("abc"), "not a valid quantity"),
            (text("m"), "not a valid quantity"),
            (text("1.5m"), "not a valid quantity"),
            (text("-1"), "not a valid quantity"),
            (text("1e3"), "not a valid quantity"),
            (text("."), "not a valid quantity"),
            (text("1."), "not a valid quantity"),
            (text("2000"), "maximum of 1024 cores"),
            (text("99999999999999999999999m"), "not a valid quantity"),
            (
                Quantity::Integer(i128::from(u64::MAX)),
                "maximum of 1024 cores",
            ),
            (Quantity::Float(1e300), "maximum of 1024 cores"),
        ];
        for (q, want) in cases {
            let err = cpu_millis(q).expect_err(&format!("{q:?} should fail"));
            assert!(err.contains(want), "{q:?}: {err}");
        }
    }

    #[test]
    fn memory_accepts_units() {
        let cases: &[(Quantity, u64)] = &[
            (text("512Mi"), 512 << 20),
            (text("1Gi"), 1 << 30),
            (text("1.5Gi"), 3 << 29),
            (text("6Mi"), MIN_MEMORY_BYTES),
            (text("7M"), 7_000_000),
            (text("7000k"), 7_000_000),
            (text("7000K"), 7_000_000),
            (text("1G"), 1_000_000_000),
            (text("1T"), 1_000_000_000_000),
            (text("1Ti"), 1 << 40),
            (text("8000Ki"), 8000 << 10),
            (text("6291456"), MIN_MEMORY_BYTES),
            (Quantity::Integer(6291456), MIN_MEMORY_BYTES),
            (Quantity::Float(1e9), 1_000_000_000),
        ];
        for (q, want) in cases {
            assert_eq!(memory_bytes(q), Ok(*want), "{q:?}");
        }
    }

    #[test]
    fn memory_rejects_bad_values() {
        let cases: &[(Quantity, &str)] = &[
            (text("4Mi"), "below the minimum of 6Mi"),
            (text("512m"), "lowercase m"),
            (text("512MB"), "unknown unit `MB`"),
            (text("512 Mi"), "unknown unit ` Mi`"),
            (text("Mi"), "not a valid quantity"),
            (text("1.0000001Ki"), "not a whole number"),
            (text("2048Ti"), "maximum of 1024Ti"),
            (text("-5Mi"), "unknown unit `-5Mi`"),
            (Quantity::Integer(-1), "must not be negative"),
            (Quantity::Integer(1000), "below the minimum"),
            (Quantity::Float(1.5), "not a whole number"),
            (Quantity::Float(1e300), "maximum of 1024Ti"),
        ];
        for (q, want) in cases {
            let err = memory_bytes(q).expect_err(&format!("{q:?} should fail"));
            assert!(err.contains(want), "{q:?}: {err}");
        }
    }
}
