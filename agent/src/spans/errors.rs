//! `error.type` for Go programs: the dynamic type of a returned error, named from the binary.

use std::{collections::HashMap, sync::Arc, sync::Mutex};

use super::http::ErrorTypes;
use crate::inspect::{elf::ElfFile, golang::types::TypeNames};

/// Names error types of one running Go program from its executable.
#[derive(Debug)]
pub struct GoErrorTypes {
    elf: Arc<ElfFile>,
    names: TypeNames,
    /// Runtime address minus link-time address (PIE).
    bias: u64,
    /// Names by itab address: a program returns few distinct error types, and naming one
    /// reads several structures of the binary.
    cache: Mutex<HashMap<u64, Option<Arc<str>>>>,
}

impl GoErrorTypes {
    /// A namer for a program loaded `bias` bytes from its link addresses.
    pub fn new(elf: Arc<ElfFile>, names: TypeNames, bias: u64) -> Self {
        Self {
            elf,
            names,
            bias,
            cache: Mutex::new(HashMap::new()),
        }
    }
}

impl ErrorTypes for GoErrorTypes {
    fn name(&self, itab: u64) -> Option<String> {
        let mut cache = self.cache.lock().ok()?;
        if let Some(hit) = cache.get(&itab) {
            return hit.as_deref().map(str::to_string);
        }
        let name = self
            .names
            .itab_type(&self.elf, itab.wrapping_sub(self.bias))
            .map(Arc::<str>::from);
        // Bounded: a garbage itab every call must not grow the cache forever.
        if cache.len() < 4096 {
            cache.insert(itab, name.clone());
        }
        name.as_deref().map(str::to_string)
    }
}
