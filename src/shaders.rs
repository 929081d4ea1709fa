//! Every WGSL file in `shaders/`, embedded with `include_str!`. One file per kernel family.
//!
//! WGSL has no imports, so code that several kernel families share lives once in a snippet,
//! `shaders/lib/<snippet>.wgsl`, and each shader lists the snippets it uses. The module given
//! to the compiler is the shader's own file followed by its snippets (see [`assemble`]):
//! WGSL declarations at module scope may be used before they appear, and appending keeps the
//! line numbers in a compiler's error about the shader's own code equal to its file's.

/// A snippet of shared WGSL: its name (the file stem in `shaders/lib/`) and text.
#[derive(Debug)]
pub struct Snippet {
    pub name: &'static str,
    pub source: &'static str,
}

/// A WGSL module: its name (the file stem), its own file, the snippets appended to it, and
/// the assembled source that is compiled.
#[derive(Debug)]
pub struct ShaderSource {
    pub name: &'static str,
    /// `shaders/<name>.wgsl` alone.
    pub body: &'static str,
    /// The snippets appended to the body, in order.
    pub snippets: &'static [&'static Snippet],
    /// `body` followed by the snippets, as [`assemble`] joins them (built at compile time).
    pub source: &'static str,
}

/// The line that introduces an appended snippet; `concat!` in `shaders!` writes the same.
fn snippet_header(name: &str) -> String {
    format!("\n// ---- shaders/lib/{name}.wgsl (appended by src/shaders.rs) ----\n")
}

/// A shader's module text: its body, then each (name, text) snippet after a header line.
/// The embedded [`ShaderSource::source`] is this, built at compile time; the native
/// `KAKUSAN_SHADER_DIR` override assembles the files it reads with it.
pub fn assemble<'a>(body: &str, snippets: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = body.to_string();
    for (name, text) in snippets {
        out.push_str(&snippet_header(name));
        out.push_str(text);
    }
    out
}

impl ShaderSource {
    /// The module assembled from the files in `dir` (the native `KAKUSAN_SHADER_DIR`
    /// override): `dir/<name>.wgsl` and `dir/lib/<snippet>.wgsl` for each listed snippet; a
    /// file missing there is taken from the embedded copy.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_from_dir(&self, dir: &std::path::Path) -> String {
        let read = |rel: String, embedded: &str| {
            std::fs::read_to_string(dir.join(rel)).unwrap_or_else(|_| embedded.to_string())
        };
        let body = read(format!("{}.wgsl", self.name), self.body);
        let snippets: Vec<(&str, String)> = self
            .snippets
            .iter()
            .map(|s| (s.name, read(format!("lib/{}.wgsl", s.name), s.source)))
            .collect();
        assemble(&body, snippets.iter().map(|(n, t)| (*n, t.as_str())))
    }
}

macro_rules! snippets {
    ($($ident:ident => $file:literal),* $(,)?) => {
        $(pub static $ident: Snippet = Snippet {
            name: $file,
            source: include_str!(concat!("../shaders/lib/", $file, ".wgsl")),
        };)*
        /// All snippets, for the tests.
        pub static SNIPPETS: &[&Snippet] = &[$(&$ident),*];
    };
}

macro_rules! shaders {
    ($($ident:ident => $file:literal $([$($snip:ident = $snip_file:literal),*])?),* $(,)?) => {
        $(pub static $ident: ShaderSource = ShaderSource {
            name: $file,
            body: include_str!(concat!("../shaders/", $file, ".wgsl")),
            snippets: &[$($(&$snip),*)?],
            source: concat!(
                include_str!(concat!("../shaders/", $file, ".wgsl")),
                $($(
                    "\n// ---- shaders/lib/", $snip_file, ".wgsl (appended by src/shaders.rs) ----\n",
                    include_str!(concat!("../shaders/lib/", $snip_file, ".wgsl")),
                )*)?
            ),
        };)*
        /// All shaders, for the naga validation test.
        pub static ALL: &[&ShaderSource] = &[$(&$ident),*];
    };
}

snippets! {
    GEMM_TILE => "gemm_tile",
    PHILOX => "philox",
    WORKGROUP_SUM => "workgroup_sum",
    GROUP_NORM_STATS => "group_norm_stats",
    TRIG_POLY => "trig_poly",
    MLP_LAYOUT => "mlp_layout",
    GROUP_NORM_STATS_V4 => "group_norm_stats_v4",
}

// Each snippet is named twice (static and file stem) because `concat!` needs the literal; the
// tests check that the two agree.
shaders! {
    ELEMENTWISE => "elementwise",
    GROUP_NORM => "group_norm" [
        WORKGROUP_SUM = "workgroup_sum",
        GROUP_NORM_STATS = "group_norm_stats"
    ],
    GROUP_NORM_V4 => "group_norm_v4" [
        WORKGROUP_SUM = "workgroup_sum",
        GROUP_NORM_STATS_V4 = "group_norm_stats_v4"
    ],
    EMBEDDING => "embedding" [TRIG_POLY = "trig_poly"],
    NOISE => "noise" [PHILOX = "philox", TRIG_POLY = "trig_poly"],
    SAMPLER => "sampler",
    MATMUL => "matmul" [GEMM_TILE = "gemm_tile"],
    CONV2D => "conv2d" [GEMM_TILE = "gemm_tile"],
    OPTIM => "optim" [WORKGROUP_SUM = "workgroup_sum"],
    OPTIM_PACKED => "optim_packed" [WORKGROUP_SUM = "workgroup_sum"],
    LOSS => "loss" [WORKGROUP_SUM = "workgroup_sum"],
    CONV2D_BACKWARD => "conv2d_backward" [GEMM_TILE = "gemm_tile"],
    CONV2D_DIRECT => "conv2d_direct",
    REDUCE => "reduce" [WORKGROUP_SUM = "workgroup_sum"],
    SOFTMAX => "softmax" [WORKGROUP_SUM = "workgroup_sum"],
    ELEMENTWISE_BACKWARD => "elementwise_backward",
    GROUP_NORM_BACKWARD => "group_norm_backward" [
        WORKGROUP_SUM = "workgroup_sum",
        GROUP_NORM_STATS = "group_norm_stats"
    ],
    GROUP_NORM_BACKWARD_V4 => "group_norm_backward_v4" [
        WORKGROUP_SUM = "workgroup_sum",
        GROUP_NORM_STATS_V4 = "group_norm_stats_v4"
    ],
    SOFTMAX_BACKWARD => "softmax_backward" [WORKGROUP_SUM = "workgroup_sum"],
    EMBEDDING_BACKWARD => "embedding_backward",
    DROPOUT => "dropout" [PHILOX = "philox"],
    PRESENT => "present",
    MLP => "mlp" [MLP_LAYOUT = "mlp_layout"],
    MLP_UPDATE => "mlp_update" [MLP_LAYOUT = "mlp_layout"],
    LAB_SCORE => "lab_score",
    LAB_FIELD => "lab_field",
    LAB_BLIT => "lab_blit",
    LAB_POINTS => "lab_points",
    CROSS_ENTROPY => "cross_entropy",
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    fn validate(name: &str, source: &str) {
        let module = naga::front::wgsl::parse_str(source)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::empty(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }

    fn wgsl_stems(dir: &str) -> Vec<String> {
        let mut stems = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "wgsl") {
                stems.push(path.file_stem().unwrap().to_str().unwrap().to_string());
            }
        }
        stems
    }

    /// naga parses and validates every shader as compiled (its file plus its snippets), and
    /// every file in shaders/ and shaders/lib/ is registered and used.
    #[test]
    fn all_shaders_parse_and_validate() {
        for s in ALL {
            validate(&format!("{}.wgsl (assembled)", s.name), s.source);
        }
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
        for stem in wgsl_stems(dir) {
            assert!(
                ALL.iter().any(|s| s.name == stem),
                "shaders/{stem}.wgsl is not registered in src/shaders.rs"
            );
        }
        for stem in wgsl_stems(&format!("{dir}/lib")) {
            assert!(
                SNIPPETS.iter().any(|s| s.name == stem),
                "shaders/lib/{stem}.wgsl is not registered in src/shaders.rs"
            );
        }
        for snippet in SNIPPETS {
            assert!(
                ALL.iter()
                    .any(|s| s.snippets.iter().any(|u| u.name == snippet.name)),
                "shaders/lib/{}.wgsl is used by no shader",
                snippet.name
            );
        }
    }

    /// The compile-time `source` is exactly what `assemble` builds from the body and the
    /// listed snippets (so the `KAKUSAN_SHADER_DIR` override compiles the same module), and a
    /// snippet listed under a static names that static's file.
    #[test]
    fn embedded_source_is_the_assembled_source() {
        for s in ALL {
            let assembled = assemble(s.body, s.snippets.iter().map(|u| (u.name, u.source)));
            assert!(
                assembled == s.source,
                "{}: the embedded source differs from assemble()",
                s.name
            );
            assert_eq!(s.source.len() > s.body.len(), !s.snippets.is_empty());
        }
    }

    /// The `KAKUSAN_SHADER_DIR` override reads snippets from `dir/lib/` as well as bodies
    /// from `dir/`, and falls back to the embedded copy of each file it does not find.
    #[test]
    fn override_dir_assembles_bodies_and_snippets() {
        let dir = std::env::temp_dir().join(format!("kakusan-shader-dir-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("lib")).unwrap();
        assert_eq!(SOFTMAX.read_from_dir(&dir), SOFTMAX.source);
        let sum = WORKGROUP_SUM
            .source
            .replace("var t = identity;", "var t = identity * 2.0;");
        assert_ne!(sum, WORKGROUP_SUM.source);
        std::fs::write(dir.join("lib/workgroup_sum.wgsl"), &sum).unwrap();
        let body = SOFTMAX
            .body
            .replace("x[base + c] = exp", "x[base + c] = 0.5 * exp");
        std::fs::write(dir.join("softmax.wgsl"), &body).unwrap();
        let got = SOFTMAX.read_from_dir(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(got, assemble(&body, [("workgroup_sum", sum.as_str())]));
        validate("softmax.wgsl (from the override dir)", &got);
    }

    /// A shader that forgets a snippet it relies on fails validation (the test above can fail).
    #[test]
    fn a_missing_snippet_fails_validation() {
        let module = naga::front::wgsl::parse_str(MATMUL.body);
        assert!(module.is_err(), "matmul.wgsl parsed without gemm_tile.wgsl");
    }
}
