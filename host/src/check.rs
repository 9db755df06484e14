//! Step 2 of a swap: check a compiled module against the ABI before it is instantiated: the
//! memory and every export the ABI names with its exact signature, and imports the host can
//! satisfy. (The ABI and state versions are functions, so they are checked right after
//! instantiation, still before the running app is touched.)

use crate::error::CheckError;
use crate::guest::GuestCtx;
use hotswap_abi::{self as abi, Export, HOST_IMPORTS, HOST_MODULE, MEMORY, WASI_MODULE};
use wasmtime::{ExternType, FuncType, InstancePre, Linker, Module};

/// Checks a module's exports and imports against the ABI, and links its imports.
pub(crate) fn check(
    linker: &Linker<GuestCtx>,
    module: &Module,
) -> Result<InstancePre<GuestCtx>, CheckError> {
    match module.get_export(MEMORY) {
        Some(ExternType::Memory(_)) => {}
        _ => return Err(CheckError::NoMemory),
    }
    for export in abi::EXPORTS {
        if !has_export(module, export)? {
            return Err(CheckError::MissingExport(export.name));
        }
    }
    for export in abi::OPTIONAL_EXPORTS {
        has_export(module, export)?;
    }
    for import in module.imports() {
        let allowed = import.module() == WASI_MODULE
            || (import.module() == HOST_MODULE && HOST_IMPORTS.contains(&import.name()));
        if !allowed {
            return Err(CheckError::ForeignImport {
                module: import.module().to_owned(),
                name: import.name().to_owned(),
            });
        }
    }
    linker
        .instantiate_pre(module)
        .map_err(|e| CheckError::Imports(format!("{e:#}")))
}

/// Whether the module exports `export`; an error if it does with another type.
fn has_export(module: &Module, export: &Export) -> Result<bool, CheckError> {
    match module.get_export(export.name) {
        None => Ok(false),
        Some(ExternType::Func(ty)) if matches(&ty, export) => Ok(true),
        Some(other) => Err(CheckError::WrongSignature {
            name: export.name,
            found: describe(&other),
            expected: signature(
                export.params.iter().map(abi_name),
                export.results.iter().map(abi_name),
            ),
        }),
    }
}

fn matches(ty: &FuncType, export: &Export) -> bool {
    let same = |actual: &mut dyn ExactSizeIterator<Item = wasmtime::ValType>,
                wanted: &[abi::ValType]| {
        actual.len() == wanted.len()
            && actual.zip(wanted).all(|(a, w)| match w {
                abi::ValType::I32 => a.is_i32(),
                abi::ValType::I64 => a.is_i64(),
            })
    };
    same(&mut ty.params(), export.params) && same(&mut ty.results(), export.results)
}

fn abi_name(ty: &abi::ValType) -> String {
    match ty {
        abi::ValType::I32 => "i32".into(),
        abi::ValType::I64 => "i64".into(),
    }
}

fn signature(
    params: impl Iterator<Item = String>,
    results: impl Iterator<Item = String>,
) -> String {
    let params: Vec<_> = params.collect();
    let results: Vec<_> = results.collect();
    format!("({}) -> ({})", params.join(", "), results.join(", "))
}

fn describe(ty: &ExternType) -> String {
    match ty {
        ExternType::Func(f) => format!(
            "a function {}",
            signature(
                f.params().map(|t| t.to_string()),
                f.results().map(|t| t.to_string())
            )
        ),
        ExternType::Global(_) => "a global".into(),
        ExternType::Table(_) => "a table".into(),
        ExternType::Memory(_) => "a memory".into(),
        ExternType::Tag(_) => "a tag".into(),
    }
}
