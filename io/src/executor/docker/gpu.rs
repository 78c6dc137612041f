//! GPU discovery by asking the vendor tools, as Bacalhau does (§4.5 of the API reference).
//!
//! A node reports the GPUs it can give to containers. Each vendor ships a CLI that knows them:
//! `nvidia-smi`, `rocm-smi`, `xpu-smi`. A tool that is not installed, or that fails (driver not
//! loaded, no device), means "no GPUs of that vendor", never an error: most nodes have no GPU
//! and must start anyway. The parsers are pure functions so they are tested on recorded
//! output without the hardware.

use std::time::Duration;

use gadus_core::model::Gpu;
use tokio::process::Command;

/// `Gpu::vendor` of NVIDIA devices.
pub const VENDOR_NVIDIA: &str = "NVIDIA";
/// `Gpu::vendor` of AMD devices (Bacalhau's spelling).
pub const VENDOR_AMD: &str = "AMD/ATI";
/// `Gpu::vendor` of Intel devices.
pub const VENDOR_INTEL: &str = "Intel";

/// A vendor tool that hangs (a wedged driver does that) must not stall node start-up.
const TOOL_TIMEOUT: Duration = Duration::from_secs(20);

const MIB: u64 = 1024 * 1024;

/// Every GPU the vendor tools report, NVIDIA first, then AMD, then Intel. Absent or failing
/// tools contribute nothing.
pub async fn detect_gpus() -> Vec<Gpu> {
    let mut gpus = Vec::new();
    // pci.bus_id is not in Bacalhau's query, but it fills `Gpu::pci_address` at no cost.
    if let Some(out) = tool_output(
        "nvidia-smi",
        &["--query-gpu=index,gpu_name,memory.total,pci.bus_id", "--format=csv,noheader,nounits"],
    )
    .await
    {
        gpus.extend(parse_nvidia_smi(&out));
    }
    if let Some(out) = tool_output(
        "rocm-smi",
        &["--showproductname", "--showbus", "--showmeminfo", "vram", "--json"],
    )
    .await
    {
        gpus.extend(parse_rocm_smi(&out));
    }
    if let Some(out) = tool_output("xpu-smi", &["discovery", "--json"]).await {
        for mut gpu in parse_xpu_smi_list(&out) {
            let id = gpu.index.to_string();
            // The list has no memory size; each device's own discovery output has.
            if let Some(detail) =
                tool_output("xpu-smi", &["discovery", "--json", "--device", &id]).await
            {
                gpu.memory = parse_xpu_smi_device_memory(&detail).unwrap_or(0);
            }
            gpus.push(gpu);
        }
    }
    gpus
}

/// The tool's stdout if it ran and exited 0 within [`TOOL_TIMEOUT`].
async fn tool_output(program: &str, args: &[&str]) -> Option<String> {
    let run = Command::new(program).args(args).kill_on_drop(true).output();
    match tokio::time::timeout(TOOL_TIMEOUT, run).await {
        Ok(Ok(out)) if out.status.success() => Some(String::from_utf8_lossy(&out.stdout).into()),
        _ => None,
    }
}

/// Parses `nvidia-smi --query-gpu=index,gpu_name,memory.total[,pci.bus_id]
/// --format=csv,noheader,nounits`: one `0, NVIDIA A100-SXM4-40GB, 40960, 00000000:07:00.0`
/// line per GPU, memory in MiB. Malformed lines are skipped.
pub fn parse_nvidia_smi(out: &str) -> Vec<Gpu> {
    out.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if fields.len() < 3 {
                return None;
            }
            Some(Gpu {
                index: fields[0].parse().ok()?,
                name: fields[1].to_string(),
                vendor: VENDOR_NVIDIA.to_string(),
                memory: fields[2].parse().ok()?,
                pci_address: fields.get(3).map(|s| s.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

/// Parses `rocm-smi --showproductname --showbus --showmeminfo vram --json`: an object keyed
/// `card<N>` with `Card series`, `PCI Bus` and `VRAM Total Memory (B)` (bytes, as a string).
pub fn parse_rocm_smi(out: &str) -> Vec<Gpu> {
    let Ok(serde_json::Value::Object(cards)) = serde_json::from_str::<serde_json::Value>(out)
    else {
        return Vec::new();
    };
    let mut gpus: Vec<Gpu> = cards
        .iter()
        .filter_map(|(key, card)| {
            let index = key.strip_prefix("card")?.parse().ok()?;
            let field = |k: &str| card.get(k).and_then(|v| v.as_str()).unwrap_or_default();
            let name = if field("Card series").is_empty() {
                field("Card model")
            } else {
                field("Card series")
            };
            Some(Gpu {
                index,
                name: name.to_string(),
                vendor: VENDOR_AMD.to_string(),
                memory: field("VRAM Total Memory (B)").parse::<u64>().unwrap_or(0) / MIB,
                pci_address: field("PCI Bus").to_string(),
            })
        })
        .collect();
    gpus.sort_by_key(|g| g.index);
    gpus
}

/// Parses `xpu-smi discovery --json`: `{"device_list":[{"device_id":0,"device_name":..,
/// "pci_bdf_address":..}]}` (no memory size there).
pub fn parse_xpu_smi_list(out: &str) -> Vec<Gpu> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(out) else { return Vec::new() };
    let Some(list) = v.get("device_list").and_then(|l| l.as_array()) else { return Vec::new() };
    list.iter()
        .filter_map(|d| {
            Some(Gpu {
                index: d.get("device_id")?.as_u64()?,
                name: d.get("device_name").and_then(|n| n.as_str()).unwrap_or_default().into(),
                vendor: VENDOR_INTEL.to_string(),
                memory: 0,
                pci_address: d
                    .get("pci_bdf_address")
                    .and_then(|n| n.as_str())
                    .unwrap_or_default()
                    .into(),
            })
        })
        .collect()
}

/// Memory in MiB from `xpu-smi discovery --json --device <id>` (`memory_physical_size_byte`,
/// a decimal string).
pub fn parse_xpu_smi_device_memory(out: &str) -> Option<u64> {
    let v = serde_json::from_str::<serde_json::Value>(out).ok()?;
    let bytes = match v.get("memory_physical_size_byte")? {
        serde_json::Value::String(s) => s.trim().parse::<u64>().ok()?,
        n => n.as_u64()?,
    };
    Some(bytes / MIB)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvidia_lines_with_and_without_bus_id() {
        let out = "0, NVIDIA A100-SXM4-40GB, 40960, 00000000:07:00.0\n\
                   1, Tesla T4, 15360\n\
                   garbage\n\
                   x, bad index, 1\n";
        let gpus = parse_nvidia_smi(out);
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].index, 0);
        assert_eq!(gpus[0].name, "NVIDIA A100-SXM4-40GB");
        assert_eq!(gpus[0].memory, 40960);
        assert_eq!(gpus[0].vendor, VENDOR_NVIDIA);
        assert_eq!(gpus[0].pci_address, "00000000:07:00.0");
        assert_eq!(gpus[1].name, "Tesla T4");
        assert_eq!(gpus[1].pci_address, "");
    }

    #[test]
    fn rocm_cards_sorted_by_index_memory_in_mib() {
        let out = r#"{"card1": {"Card series": "Instinct MI210", "Card model": "0x0c34",
            "PCI Bus": "0000:83:00.0", "VRAM Total Memory (B)": "68702699520"},
            "card0": {"Card series": "", "Card model": "0x73bf",
            "PCI Bus": "0000:03:00.0", "VRAM Total Memory (B)": "17163091968"},
            "system": {"Driver version": "6.3.6"}}"#;
        let gpus = parse_rocm_smi(out);
        assert_eq!(gpus.len(), 2);
        assert_eq!((gpus[0].index, gpus[0].name.as_str()), (0, "0x73bf"));
        assert_eq!(gpus[0].memory, 16368);
        assert_eq!(gpus[1].name, "Instinct MI210");
        assert_eq!(gpus[1].memory, 65520);
        assert_eq!(gpus[1].pci_address, "0000:83:00.0");
        assert!(gpus.iter().all(|g| g.vendor == VENDOR_AMD));
        assert!(parse_rocm_smi("not json").is_empty());
    }

    #[test]
    fn xpu_list_and_device_memory() {
        let list = r#"{"device_list":[{"device_id":0,"device_name":"Intel(R) Data Center GPU Max 1550",
            "pci_bdf_address":"0000:29:00.0","uuid":"x"}]}"#;
        let gpus = parse_xpu_smi_list(list);
        assert_eq!(gpus.len(), 1);
        assert_eq!(gpus[0].name, "Intel(R) Data Center GPU Max 1550");
        assert_eq!(gpus[0].pci_address, "0000:29:00.0");
        assert_eq!(gpus[0].vendor, VENDOR_INTEL);
        let detail = r#"{"device_id":0,"memory_physical_size_byte":"137438953472"}"#;
        assert_eq!(parse_xpu_smi_device_memory(detail), Some(131072));
        assert_eq!(parse_xpu_smi_device_memory("{}"), None);
        assert!(parse_xpu_smi_list("{}").is_empty());
    }

    #[tokio::test]
    async fn absent_tools_mean_no_gpus_not_an_error() {
        assert_eq!(tool_output("gadus-definitely-not-a-gpu-tool", &[]).await, None);
    }
}
