//! `kakusan` command line (native only; the browser app is the wasm build of the library).

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    kakusan::cli::main()
}

#[cfg(target_arch = "wasm32")]
fn main() {}
