//! Resource quantities: parsing the strings users write and doing arithmetic on the numbers.
//!
//! Parsing follows Bacalhau, which lower-cases the strings and then reads CPU as a Kubernetes
//! quantity (`500m`, `1.5`, `2`) and memory/disk with go-humanize (`512Mb` = 512·10⁶,
//! `1.5GiB` = 1.5·2³⁰, `1048576`). GPU is a whole number.

use serde::{Deserialize, Serialize};

use super::job::ResourcesConfig;

/// Resources as numbers (Bacalhau `models.Resources`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// Cores (fractional).
    #[serde(rename = "CPU", default, skip_serializing_if = "is_zero_f64")]
    pub cpu: f64,
    /// Bytes.
    #[serde(rename = "Memory", default, skip_serializing_if = "is_zero_u64")]
    pub memory: u64,
    /// Bytes.
    #[serde(rename = "Disk", default, skip_serializing_if = "is_zero_u64")]
    pub disk: u64,
    /// Whole GPUs.
    #[serde(rename = "GPU", default, skip_serializing_if = "is_zero_u64")]
    pub gpu: u64,
    /// Details of the GPUs (node capacity reports).
    #[serde(rename = "GPUs", default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<Gpu>,
}

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

/// One GPU of a node (Bacalhau `models.GPU`; keys PascalCase).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Gpu {
    /// Index as the vendor tool reports it.
    #[serde(default)]
    pub index: u64,
    /// Model name.
    #[serde(default)]
    pub name: String,
    /// `NVIDIA`, `AMD/ATI` or `Intel`.
    #[serde(default)]
    pub vendor: String,
    /// Memory in MiB.
    #[serde(default)]
    pub memory: u64,
    /// PCI address.
    #[serde(rename = "PCIAddress", default)]
    pub pci_address: String,
}

/// Resources allocated to an execution, per task (Bacalhau `models.AllocatedResources`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AllocatedResources {
    /// Task name → resources.
    #[serde(default)]
    pub tasks: std::collections::BTreeMap<String, Resources>,
}

impl AllocatedResources {
    /// Sum over tasks.
    pub fn total(&self) -> Resources {
        self.tasks.values().fold(Resources::default(), |acc, r| acc.add(r))
    }
}

/// Tolerance for CPU comparisons (floating point sums of millicores).
const CPU_EPSILON: f64 = 1e-9;

impl Resources {
    /// A CPU/memory/disk/GPU quadruple.
    pub fn new(cpu: f64, memory: u64, disk: u64, gpu: u64) -> Self {
        Resources { cpu, memory, disk, gpu, gpus: Vec::new() }
    }

    /// Component-wise sum (saturating).
    pub fn add(&self, o: &Resources) -> Resources {
        Resources {
            cpu: self.cpu + o.cpu,
            memory: self.memory.saturating_add(o.memory),
            disk: self.disk.saturating_add(o.disk),
            gpu: self.gpu.saturating_add(o.gpu),
            gpus: Vec::new(),
        }
    }

    /// Component-wise minimum.
    pub fn min(&self, o: &Resources) -> Resources {
        Resources {
            cpu: self.cpu.min(o.cpu),
            memory: self.memory.min(o.memory),
            disk: self.disk.min(o.disk),
            gpu: self.gpu.min(o.gpu),
            gpus: Vec::new(),
        }
    }

    /// Component-wise difference, floored at zero.
    pub fn sub(&self, o: &Resources) -> Resources {
        Resources {
            cpu: (self.cpu - o.cpu).max(0.0),
            memory: self.memory.saturating_sub(o.memory),
            disk: self.disk.saturating_sub(o.disk),
            gpu: self.gpu.saturating_sub(o.gpu),
            gpus: Vec::new(),
        }
    }

    /// Component-wise scaling (for over-subscription factors and percentages).
    pub fn scale(&self, factor: f64) -> Resources {
        Resources {
            cpu: self.cpu * factor,
            memory: (self.memory as f64 * factor) as u64,
            disk: (self.disk as f64 * factor) as u64,
            gpu: (self.gpu as f64 * factor) as u64,
            gpus: Vec::new(),
        }
    }

    /// Whether every component is ≤ the other's.
    pub fn fits_in(&self, o: &Resources) -> bool {
        self.cpu <= o.cpu + CPU_EPSILON
            && self.memory <= o.memory
            && self.disk <= o.disk
            && self.gpu <= o.gpu
    }

    /// Every component is zero.
    pub fn is_zero(&self) -> bool {
        self.cpu == 0.0 && self.memory == 0 && self.disk == 0 && self.gpu == 0
    }

    /// Each zero component takes the other's value (job defaults).
    pub fn or_defaults(&self, d: &Resources) -> Resources {
        Resources {
            cpu: if self.cpu > 0.0 { self.cpu } else { d.cpu },
            memory: if self.memory > 0 { self.memory } else { d.memory },
            disk: if self.disk > 0 { self.disk } else { d.disk },
            gpu: if self.gpu > 0 { self.gpu } else { d.gpu },
            gpus: self.gpus.clone(),
        }
    }

    /// Names of the components where `self` exceeds `o` (for "why not this node" messages).
    pub fn exceeding(&self, o: &Resources) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.cpu > o.cpu + CPU_EPSILON {
            out.push("CPU");
        }
        if self.memory > o.memory {
            out.push("memory");
        }
        if self.disk > o.disk {
            out.push("disk");
        }
        if self.gpu > o.gpu {
            out.push("GPU");
        }
        out
    }
}

impl std::fmt::Display for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{{CPU: {:.2}, Memory: {}, Disk: {}, GPU: {}}}",
            self.cpu,
            human_bytes(self.memory),
            human_bytes(self.disk),
            self.gpu
        )
    }
}

/// go-humanize's `Bytes`: SI units with one decimal (`512 MB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 10 {
        return format!("{n} B");
    }
    let exp = ((n as f64).ln() / 1000f64.ln()).floor() as usize;
    let exp = exp.min(UNITS.len() - 1);
    let val = n as f64 / 1000f64.powi(exp as i32);
    if val < 10.0 { format!("{val:.1} {}", UNITS[exp]) } else { format!("{val:.0} {}", UNITS[exp]) }
}

/// Largest CPU request accepted (cores); beyond this is a typo or an attack.
pub const MAX_CPU: f64 = 1_000_000.0;

/// Longest resource string accepted.
const MAX_QUANTITY_LEN: usize = 64;

/// Why a resource string did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not a number with a known suffix.
    #[error("invalid quantity {0:?}")]
    Malformed(String),
    /// Negative quantities make no sense.
    #[error("quantity {0:?} is negative")]
    Negative(String),
    /// Too large to represent (or to be plausible).
    #[error("quantity {0:?} is out of range")]
    OutOfRange(String),
}

fn normalized(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase()
}

/// Splits `s` into a leading decimal number (digits, at most one '.') and the rest.
fn split_number(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    s.split_at(end)
}

fn parse_decimal(num: &str, original: &str) -> Result<f64, QuantityError> {
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return Err(QuantityError::Malformed(original.to_string()));
    }
    num.parse::<f64>().map_err(|_| QuantityError::Malformed(original.to_string()))
}

/// Parses a Kubernetes CPU quantity into cores: `500m` → 0.5, `1.5` → 1.5, `2` → 2, `1k` → 1000.
pub fn parse_cpu(s: &str) -> Result<f64, QuantityError> {
    if s.len() > MAX_QUANTITY_LEN {
        return Err(QuantityError::OutOfRange(s.chars().take(16).collect()));
    }
    let n = normalized(s);
    if n.starts_with('-') {
        return Err(QuantityError::Negative(s.to_string()));
    }
    let body = n.strip_prefix('+').unwrap_or(&n);
    let (num, suffix) = split_number(body);
    let base = parse_decimal(num, s)?;
    let value = match suffix {
        "" => base,
        "n" => base * 1e-9,
        "u" => base * 1e-6,
        "m" => base * 1e-3,
        "k" => base * 1e3,
        "ki" => base * 1024.0,
        exp if exp.starts_with('e') => {
            let e: i32 = exp[1..].parse().map_err(|_| QuantityError::Malformed(s.to_string()))?;
            if !(-9..=18).contains(&e) {
                return Err(QuantityError::OutOfRange(s.to_string()));
            }
            base * 10f64.powi(e)
        }
        _ => return Err(QuantityError::Malformed(s.to_string())),
    };
    if !value.is_finite() || value > MAX_CPU {
        return Err(QuantityError::OutOfRange(s.to_string()));
    }
    Ok(value)
}

/// Parses a byte size like go-humanize's `ParseBytes`: `512Mb` → 512,000,000, `1.5GiB` →
/// 1,610,612,736, `1k` → 1000, `1048576` → 1,048,576. Case-insensitive; commas in the number are
/// ignored.
pub fn parse_bytes(s: &str) -> Result<u64, QuantityError> {
    if s.len() > MAX_QUANTITY_LEN {
        return Err(QuantityError::OutOfRange(s.chars().take(16).collect()));
    }
    let n = normalized(s).replace(',', "");
    if n.starts_with('-') {
        return Err(QuantityError::Negative(s.to_string()));
    }
    let (num, suffix) = split_number(&n);
    let base = parse_decimal(num, s)?;
    let mult: f64 = match suffix {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "ki" | "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mi" | "mib" => 1024f64.powi(2),
        "g" | "gb" => 1e9,
        "gi" | "gib" => 1024f64.powi(3),
        "t" | "tb" => 1e12,
        "ti" | "tib" => 1024f64.powi(4),
        "p" | "pb" => 1e15,
        "pi" | "pib" => 1024f64.powi(5),
        "e" | "eb" => 1e18,
        "ei" | "eib" => 1024f64.powi(6),
        _ => return Err(QuantityError::Malformed(s.to_string())),
    };
    let v = base * mult;
    // u64::MAX as f64 rounds up to 2^64, so `>=` rejects everything that would not fit.
    if !v.is_finite() || v >= u64::MAX as f64 {
        return Err(QuantityError::OutOfRange(s.to_string()));
    }
    Ok(v as u64)
}

/// Parses a GPU count.
pub fn parse_gpu(s: &str) -> Result<u64, QuantityError> {
    let n = normalized(s);
    if n.starts_with('-') {
        return Err(QuantityError::Negative(s.to_string()));
    }
    if n.is_empty() || !n.chars().all(|c| c.is_ascii_digit()) {
        return Err(QuantityError::Malformed(s.chars().take(64).collect()));
    }
    n.parse::<u64>().map_err(|_| QuantityError::OutOfRange(s.chars().take(64).collect()))
}

impl ResourcesConfig {
    /// Lower-cases and strips whitespace, as Bacalhau's `Normalize` does.
    pub fn normalize(&mut self) {
        for f in [&mut self.cpu, &mut self.memory, &mut self.disk, &mut self.gpu] {
            *f = normalized(f);
        }
    }

    /// Parses every field; each failure is reported with its field name.
    pub fn parse(&self) -> Result<Resources, Vec<(&'static str, QuantityError)>> {
        let mut errs = Vec::new();
        let mut r = Resources::default();
        if !self.cpu.is_empty() {
            match parse_cpu(&self.cpu) {
                Ok(v) => r.cpu = v,
                Err(e) => errs.push(("CPU", e)),
            }
        }
        if !self.memory.is_empty() {
            match parse_bytes(&self.memory) {
                Ok(v) => r.memory = v,
                Err(e) => errs.push(("Memory", e)),
            }
        }
        if !self.disk.is_empty() {
            match parse_bytes(&self.disk) {
                Ok(v) => r.disk = v,
                Err(e) => errs.push(("Disk", e)),
            }
        }
        if !self.gpu.is_empty() {
            match parse_gpu(&self.gpu) {
                Ok(v) => r.gpu = v,
                Err(e) => errs.push(("GPU", e)),
            }
        }
        if errs.is_empty() { Ok(r) } else { Err(errs) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities() {
        assert_eq!(parse_cpu("500m").unwrap(), 0.5);
        assert_eq!(parse_cpu("1.5").unwrap(), 1.5);
        assert_eq!(parse_cpu("2").unwrap(), 2.0);
        assert_eq!(parse_cpu(" 250M ").unwrap(), 0.25); // lower-cased like Bacalhau
        assert_eq!(parse_cpu("1e2").unwrap(), 100.0);
        assert!(matches!(parse_cpu("-1"), Err(QuantityError::Negative(_))));
        assert!(matches!(parse_cpu("abc"), Err(QuantityError::Malformed(_))));
        assert!(matches!(parse_cpu("1.2.3"), Err(QuantityError::Malformed(_))));
        assert!(matches!(parse_cpu("1e300"), Err(QuantityError::OutOfRange(_))));
        assert!(matches!(parse_cpu("99999999999"), Err(QuantityError::OutOfRange(_))));
    }

    #[test]
    fn byte_sizes_follow_go_humanize() {
        assert_eq!(parse_bytes("512Mb").unwrap(), 512_000_000);
        assert_eq!(parse_bytes("1gb").unwrap(), 1_000_000_000);
        assert_eq!(parse_bytes("1.5GiB").unwrap(), 1_610_612_736);
        assert_eq!(parse_bytes("1048576").unwrap(), 1_048_576);
        assert_eq!(parse_bytes("1 KiB").unwrap(), 1024);
        assert_eq!(parse_bytes("1,000").unwrap(), 1000);
        assert!(matches!(parse_bytes("12 parsecs"), Err(QuantityError::Malformed(_))));
        assert!(matches!(parse_bytes("-5mb"), Err(QuantityError::Negative(_))));
        assert!(matches!(parse_bytes("100000eib"), Err(QuantityError::OutOfRange(_))));
        assert!(matches!(parse_bytes("18446744073709551616"), Err(QuantityError::OutOfRange(_))));
        assert!(matches!(parse_bytes(""), Err(QuantityError::Malformed(_))));
    }

    #[test]
    fn gpu_counts() {
        assert_eq!(parse_gpu("2").unwrap(), 2);
        assert!(parse_gpu("1.5").is_err());
        assert!(parse_gpu("-1").is_err());
        assert!(parse_gpu("99999999999999999999999").is_err());
    }

    #[test]
    fn arithmetic_saturates_and_floors() {
        let a = Resources::new(1.0, 100, 10, 1);
        let b = Resources::new(2.0, 50, 20, 0);
        assert_eq!(a.sub(&b), Resources::new(0.0, 50, 0, 1));
        assert!(Resources::new(0.1 + 0.2, 0, 0, 0).fits_in(&Resources::new(0.3, 0, 0, 0)));
        assert_eq!(a.exceeding(&b), vec!["memory", "GPU"]);
        assert_eq!(human_bytes(512_000_000), "512 MB");
    }
}
