//! `kakusan` command line (native only; the browser app is the wasm build of the library).

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    // First thing, before any thread exists and before wgpu loads a Vulkan driver.
    let _runtime_dir = runtime_dir::ensure();
    kakusan::cli::main()
}

#[cfg(target_arch = "wasm32")]
fn main() {}

/// Mesa's Vulkan loader (through libwayland) prints `error: XDG_RUNTIME_DIR is invalid or not
/// set in the environment.` when the variable is unset or not an absolute path: harmless, but
/// on a successful run it reads like a failure. So when the user has no usable runtime
/// directory, the process gets a private one (mode 0700, like mktemp -d) in the temp dir,
/// removed again when `main` returns (an exit through `std::process::exit`, as clap's for
/// `--help` and usage errors, leaves the empty directory in the temp dir).
#[cfg(all(unix, not(target_arch = "wasm32")))]
mod runtime_dir {
    use std::os::unix::fs::DirBuilderExt;
    use std::path::{Path, PathBuf};

    /// Removes the directory it names when dropped.
    pub struct Private(PathBuf);

    impl Drop for Private {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// What libwayland accepts (an absolute path) and what is usable (an existing directory).
    fn usable(dir: &Path) -> bool {
        dir.is_absolute() && dir.is_dir()
    }

    /// Point XDG_RUNTIME_DIR at a fresh private directory unless it already names a usable one.
    /// On failure nothing changes (the only cost is Mesa's message).
    pub fn ensure() -> Option<Private> {
        if std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| usable(Path::new(&d))) {
            return None;
        }
        let tmp = std::env::temp_dir();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        for attempt in 0..16u32 {
            let dir = tmp.join(format!(
                "kakusan-runtime-{}-{:08x}",
                std::process::id(),
                nanos.wrapping_add(attempt.wrapping_mul(0x9E37_79B9))
            ));
            // create (not create_all): fails if the name exists, so we never adopt a directory
            // or link someone else made; the mode is set at creation.
            if std::fs::DirBuilder::new().mode(0o700).create(&dir).is_ok() {
                // SAFETY: called first thing in main, while the process has one thread, so no
                // other thread reads or writes the environment concurrently.
                unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
                return Some(Private(dir));
            }
        }
        None
    }
}

#[cfg(all(not(unix), not(target_arch = "wasm32")))]
mod runtime_dir {
    /// Only Mesa on Unix-like systems reads XDG_RUNTIME_DIR.
    pub fn ensure() -> Option<()> {
        None
    }
}
