//! Every WGSL file in `shaders/`, embedded with `include_str!`. One file per kernel family.

/// A WGSL module: its name (the file stem) and source.
#[derive(Debug)]
pub struct ShaderSource {
    pub name: &'static str,
    pub source: &'static str,
}

macro_rules! shaders {
    ($($ident:ident => $file:literal),* $(,)?) => {
        $(pub static $ident: ShaderSource = ShaderSource {
            name: $file,
            source: include_str!(concat!("../shaders/", $file, ".wgsl")),
        };)*
        /// All shaders, for the naga validation test.
        pub static ALL: &[&ShaderSource] = &[$(&$ident),*];
    };
}

shaders! {
    ELEMENTWISE => "elementwise",
    GROUP_NORM => "group_norm",
    EMBEDDING => "embedding",
    NOISE => "noise",
    SAMPLER => "sampler",
    MATMUL => "matmul",
    CONV2D => "conv2d",
    OPTIM => "optim",
    LOSS => "loss",
    CONV2D_BACKWARD => "conv2d_backward",
    REDUCE => "reduce",
    SOFTMAX => "softmax",
    ELEMENTWISE_BACKWARD => "elementwise_backward",
    GROUP_NORM_BACKWARD => "group_norm_backward",
    SOFTMAX_BACKWARD => "softmax_backward",
    EMBEDDING_BACKWARD => "embedding_backward",
    DROPOUT => "dropout",
    PRESENT => "present",
    MLP => "mlp",
    MLP_UPDATE => "mlp_update",
    LAB_SCORE => "lab_score",
    CROSS_ENTROPY => "cross_entropy",
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    /// naga parses and validates every shader, and every file in shaders/ is registered.
    #[test]
    fn all_shaders_parse_and_validate() {
        for s in ALL {
            let module = naga::front::wgsl::parse_str(s.source)
                .unwrap_or_else(|e| panic!("{}.wgsl: {}", s.name, e.emit_to_string(s.source)));
            naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::empty(),
            )
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}.wgsl: {e:?}", s.name));
        }
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "wgsl") {
                let stem = path.file_stem().unwrap().to_str().unwrap();
                assert!(
                    ALL.iter().any(|s| s.name == stem),
                    "shaders/{stem}.wgsl is not registered in src/shaders.rs"
                );
            }
        }
    }
}
