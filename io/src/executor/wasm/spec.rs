//! From `Engine.Params` to compiled modules: locating `EntryModule` and `ImportModules` in the
//! task filesystem, reading them (size-capped) and compiling them once, in `prepare`.
//!
//! A module path is a path *inside the task* (Bacalhau v1.7+): it names an input's target, a
//! file beneath a directory input's target, or a directory holding exactly one `.wasm`. Files
//! beneath a directory input are opened through a cap-std handle on that directory, so a
//! symlink inside downloaded data cannot make the node read an arbitrary host file.

use std::io::Read;
use std::path::PathBuf;

use gadus_core::model::WasmEngineSpec;
use gadus_core::protocol::{ExecFailure, FailureKind};
use wasmi::{Engine, ExternType, Module};

use super::fs::guest_components;
use crate::executor::{PreparedInput, failure};

/// The WASI preview-1 import namespace (an import module cannot take this name).
pub(crate) const WASI_MODULE: &str = "wasi_snapshot_preview1";

/// Compiled modules of one execution, cached between `prepare` and `run`.
pub(crate) struct Prepared {
    /// The module whose entrypoint runs.
    pub entry: Module,
    /// Its path inside the task (for messages).
    pub entry_path: String,
    /// Import modules in instantiation order, each with the names it is registered under.
    pub imports: Vec<(Vec<String>, Module)>,
    /// The exported function to call.
    pub entrypoint: String,
}

/// Where a module path leads on the host.
struct Located {
    /// The input directory the module lies in (opened with cap-std), or `None` when the
    /// module is an input by itself.
    root: Option<PathBuf>,
    /// Path of the module: relative to `root`, or absolute on the host when `root` is `None`.
    path: PathBuf,
    /// The module file's name without extension (the default import-module name).
    stem: String,
}

/// Loads and compiles everything `spec` names. Blocking (file I/O, compilation).
pub(crate) fn load(
    engine: &Engine,
    spec: &WasmEngineSpec,
    inputs: &[PreparedInput],
    max_bytes: u64,
) -> Result<Prepared, ExecFailure> {
    let mut imports: Vec<(Vec<String>, Module)> = Vec::new();
    for path in &spec.import_modules {
        let (module, stem) = load_one(engine, "ImportModules", path, inputs, max_bytes)?;
        let mut names = vec![stem];
        if let Some(name) = declared_name(&module)
            && !names.contains(&name)
        {
            names.push(name);
        }
        for name in &names {
            if name == WASI_MODULE {
                return Err(failure(
                    FailureKind::InvalidSpec,
                    format!("import module {path} must not be named {WASI_MODULE}"),
                ));
            }
            if imports.iter().any(|(n, _)| n.contains(name)) {
                return Err(failure(
                    FailureKind::InvalidSpec,
                    format!("two import modules are named {name:?}"),
                ));
            }
        }
        check_imports(&module, path, &imports)?;
        imports.push((names, module));
    }
    let (entry, _) = load_one(engine, "EntryModule", &spec.entry_module, inputs, max_bytes)?;
    check_imports(&entry, &spec.entry_module, &imports)?;

    let entrypoint = spec.entrypoint().to_string();
    match entry.get_export(&entrypoint) {
        Some(ExternType::Func(ty)) if ty.params().is_empty() => {}
        Some(ExternType::Func(ty)) => {
            return Err(failure(
                FailureKind::InvalidSpec,
                format!(
                    "entrypoint {entrypoint:?} of {} takes {} parameter(s); it must take none",
                    spec.entry_module,
                    ty.params().len()
                ),
            ));
        }
        _ => {
            let exported: Vec<&str> = entry
                .exports()
                .filter(|e| matches!(e.ty(), ExternType::Func(_)))
                .map(|e| e.name())
                .collect();
            return Err(failure(
                FailureKind::InvalidSpec,
                format!(
                    "entrypoint {entrypoint:?} is not an exported function of {} \
                     (exported functions: {})",
                    spec.entry_module,
                    if exported.is_empty() { "none".to_string() } else { exported.join(", ") }
                ),
            ));
        }
    }
    Ok(Prepared { entry, entry_path: spec.entry_module.clone(), imports, entrypoint })
}

/// Every non-WASI import of `module` must be provided by an import module loaded before it;
/// checking here turns a link error at run time into a clear spec error at prepare time.
fn check_imports(
    module: &Module,
    path: &str,
    available: &[(Vec<String>, Module)],
) -> Result<(), ExecFailure> {
    for import in module.imports() {
        if import.module() == WASI_MODULE {
            continue;
        }
        let provider =
            available.iter().find(|(names, _)| names.iter().any(|n| n == import.module()));
        let Some((_, provider)) = provider else {
            return Err(failure(
                FailureKind::InvalidSpec,
                format!(
                    "{path} imports {}.{}, but no import module is named {:?}",
                    import.module(),
                    import.name(),
                    import.module()
                ),
            ));
        };
        if provider.get_export(import.name()).is_none() {
            return Err(failure(
                FailureKind::InvalidSpec,
                format!(
                    "{path} imports {}.{}, which module {:?} does not export",
                    import.module(),
                    import.name(),
                    import.module()
                ),
            ));
        }
    }
    Ok(())
}

fn load_one(
    engine: &Engine,
    param: &str,
    path: &str,
    inputs: &[PreparedInput],
    max_bytes: u64,
) -> Result<(Module, String), ExecFailure> {
    let located = locate(param, path, inputs)?;
    let bytes = read_capped(&located, path, max_bytes)?;
    // wasmi would also accept the text format (its `wat` feature is on); Bacalhau takes
    // binaries only, and parsing text is a needless attack surface.
    if !bytes.starts_with(b"\0asm") {
        return Err(failure(
            FailureKind::InvalidSpec,
            format!("{param} {path} is not a WebAssembly binary (no \\0asm header)"),
        ));
    }
    let module = Module::new(engine, &bytes).map_err(|e| {
        failure(FailureKind::InvalidSpec, format!("{param} {path} is not a valid module: {e}"))
    })?;
    Ok((module, located.stem))
}

/// Finds `path` among the inputs (the most specific target wins).
fn locate(param: &str, path: &str, inputs: &[PreparedInput]) -> Result<Located, ExecFailure> {
    let wanted = guest_components(path)
        .map_err(|e| failure(FailureKind::InvalidSpec, format!("{param}: {e}")))?;
    let best = inputs
        .iter()
        .filter_map(|i| guest_components(&i.target).ok().map(|t| (t, i)))
        .filter(|(t, _)| wanted.starts_with(t))
        .max_by_key(|(t, _)| t.len());
    let Some((target, input)) = best else {
        let targets: Vec<&str> = inputs.iter().map(|i| i.target.as_str()).collect();
        return Err(failure(
            FailureKind::InvalidSpec,
            format!(
                "{param} {path} is not provided by any input source (input targets: {})",
                if targets.is_empty() { "none".to_string() } else { targets.join(", ") }
            ),
        ));
    };
    let unavailable = |what: String| failure(FailureKind::ImageUnavailable, what);
    let rel = &wanted[target.len()..];
    let host = &input.host_path;
    let meta = std::fs::metadata(host)
        .map_err(|e| unavailable(format!("{param} {path}: input {}: {e}", input.target)))?;

    if rel.is_empty() {
        if meta.is_file() {
            return Ok(Located { root: None, path: host.clone(), stem: stem_of(host) });
        }
        let dir = open_dir(host).map_err(|e| unavailable(format!("{param} {path}: {e}")))?;
        let name = single_wasm(&dir, path)?;
        return Ok(Located {
            root: Some(host.clone()),
            stem: stem_of(&PathBuf::from(&name)),
            path: name.into(),
        });
    }
    if !meta.is_dir() {
        return Err(unavailable(format!(
            "{param} {path}: input {} is a file, not a directory",
            input.target
        )));
    }
    let dir = open_dir(host).map_err(|e| unavailable(format!("{param} {path}: {e}")))?;
    let rel_path: PathBuf = rel.iter().collect();
    let rel_meta = dir.metadata(&rel_path).map_err(|e| {
        unavailable(format!("{param} {path} not found in input {}: {e}", input.target))
    })?;
    if rel_meta.is_dir() {
        let sub =
            dir.open_dir(&rel_path).map_err(|e| unavailable(format!("{param} {path}: {e}")))?;
        let name = single_wasm(&sub, path)?;
        let stem = stem_of(&PathBuf::from(&name));
        return Ok(Located { root: Some(host.clone()), path: rel_path.join(name), stem });
    }
    Ok(Located { root: Some(host.clone()), stem: stem_of(&rel_path), path: rel_path })
}

fn open_dir(host: &std::path::Path) -> std::io::Result<cap_std::fs::Dir> {
    cap_std::fs::Dir::open_ambient_dir(host, cap_std::ambient_authority())
}

/// The one `.wasm` file in `dir`.
fn single_wasm(dir: &cap_std::fs::Dir, path: &str) -> Result<String, ExecFailure> {
    let entries = dir
        .entries()
        .map_err(|e| failure(FailureKind::ImageUnavailable, format!("listing {path}: {e}")))?;
    let mut found: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.ends_with(".wasm"))
        .filter(|name| dir.metadata(name).is_ok_and(|m| m.is_file()))
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(failure(
            FailureKind::ImageUnavailable,
            format!("{path} is a directory without a .wasm file"),
        )),
        _ => Err(failure(
            FailureKind::InvalidSpec,
            format!(
                "{path} holds several .wasm files ({}); name one in the module path",
                found.join(", ")
            ),
        )),
    }
}

fn stem_of(path: &std::path::Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Reads the module, refusing files over `max_bytes` without reading them whole.
fn read_capped(located: &Located, path: &str, max_bytes: u64) -> Result<Vec<u8>, ExecFailure> {
    let unavailable = |e: std::io::Error| {
        failure(FailureKind::ImageUnavailable, format!("reading module {path}: {e}"))
    };
    let too_big = || {
        failure(
            FailureKind::InvalidSpec,
            format!("module {path} is larger than the {} MiB limit", max_bytes / (1024 * 1024)),
        )
    };
    let file: Box<dyn Read> = match &located.root {
        None => Box::new(std::fs::File::open(&located.path).map_err(unavailable)?),
        Some(root) => {
            let dir = open_dir(root).map_err(unavailable)?;
            Box::new(dir.open(&located.path).map_err(unavailable)?.into_std())
        }
    };
    let mut bytes = Vec::new();
    file.take(max_bytes.saturating_add(1)).read_to_end(&mut bytes).map_err(unavailable)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_big());
    }
    Ok(bytes)
}

/// The module name from the custom `name` section (subsection 0), if the module has one.
pub(crate) fn declared_name(module: &Module) -> Option<String> {
    let section = module.custom_sections().find(|s| s.name() == "name")?;
    let mut data = section.data();
    while let Some((&id, rest)) = data.split_first() {
        let (size, rest) = read_leb_u32(rest)?;
        let size = usize::try_from(size).ok()?;
        if rest.len() < size {
            return None;
        }
        let (content, rest) = rest.split_at(size);
        if id == 0 {
            let (len, content) = read_leb_u32(content)?;
            let bytes = content.get(..usize::try_from(len).ok()?)?;
            let name = std::str::from_utf8(bytes).ok()?.to_string();
            return if name.is_empty() { None } else { Some(name) };
        }
        data = rest;
    }
    None
}

/// Decodes an unsigned LEB128 `u32`; returns it and the remaining bytes.
fn read_leb_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let mut value: u32 = 0;
    for (i, &b) in bytes.iter().enumerate().take(5) {
        value |= u32::from(b & 0x7f).checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128_decodes_and_rejects_overlong_input() {
        assert_eq!(read_leb_u32(&[0x00]), Some((0, &[][..])));
        assert_eq!(read_leb_u32(&[0xE5, 0x8E, 0x26, 0x07]), Some((624_485, &[0x07][..])));
        assert_eq!(read_leb_u32(&[0x80, 0x80]), None, "truncated");
        assert_eq!(read_leb_u32(&[0x80; 6]), None, "longer than 5 bytes");
    }

    #[test]
    fn the_module_name_comes_from_the_name_section() {
        let engine = Engine::default();
        let named = Module::new(&engine, wat::parse_str("(module $mathlib)").unwrap()).unwrap();
        assert_eq!(declared_name(&named).as_deref(), Some("mathlib"));
        let anonymous = Module::new(&engine, wat::parse_str("(module)").unwrap()).unwrap();
        assert_eq!(declared_name(&anonymous), None);
        // Function names only (subsection 1): no module name.
        let funcs = Module::new(&engine, wat::parse_str("(module (func $f))").unwrap()).unwrap();
        assert_eq!(declared_name(&funcs), None);
    }
}
