//! A faster `memcmp` for the guest, opt-in: the SDK's `fast-memcmp` feature.
//!
//! Rust compares strings and byte slices (`Ord`, `==`, and so the key checks of
//! [`de::btree_map`](crate::de::btree_map)) with `memcmp`. On `wasm32-wasip1` that comes from
//! wasi-libc and compares one byte per iteration. This one compares eight bytes per iteration
//! and, defined in the app's own code, is linked instead of wasi-libc's. It is opt-in because it
//! replaces a C library symbol for the whole module; BENCHMARKS.md has what it saves on a swap
//! of string-keyed state.

/// Compares `n` bytes at `a` and `b` as C's `memcmp` does.
///
/// # Safety
/// `a` and `b` must be valid for reads of `n` bytes.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) unsafe fn compare(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    // SAFETY: every read lies below `n`, which the caller guarantees readable.
    unsafe {
        while i + 8 <= n {
            let x = a.add(i).cast::<u64>().read_unaligned();
            let y = b.add(i).cast::<u64>().read_unaligned();
            if x != y {
                // Loaded little-endian: swapping the bytes makes the first byte the most
                // significant, so the integers order as the bytes do.
                return if x.swap_bytes() < y.swap_bytes() {
                    -1
                } else {
                    1
                };
            }
            i += 8;
        }
        while i < n {
            let (x, y) = (*a.add(i), *b.add(i));
            if x != y {
                return i32::from(x) - i32::from(y);
            }
            i += 1;
        }
    }
    0
}

/// The guest's `memcmp`.
///
/// # Safety
/// As for [`compare`].
#[cfg(target_arch = "wasm32")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller upholds `compare`'s contract.
    unsafe { compare(a, b, n) }
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    fn compare(a: &[u8], b: &[u8]) -> Ordering {
        assert_eq!(a.len(), b.len());
        // SAFETY: both slices hold `a.len()` bytes.
        unsafe { super::compare(a.as_ptr(), b.as_ptr(), a.len()) }.cmp(&0)
    }

    /// Every length up to 40, with one differing byte at every position, both ways, and
    /// bytes on both sides of 0x80 (a signed comparison would get those wrong).
    #[test]
    fn orders_as_slices_do() {
        for len in 0..40 {
            let base: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(compare(&base, &base), Ordering::Equal);
            for at in 0..len {
                for other in [0u8, 1, 0x7f, 0x80, 0xfe, 0xff] {
                    let mut changed = base.clone();
                    changed[at] = other;
                    assert_eq!(compare(&base, &changed), base.cmp(&changed), "{len} {at}");
                    assert_eq!(compare(&changed, &base), changed.cmp(&base), "{len} {at}");
                }
            }
        }
    }

    /// Unaligned starts.
    #[test]
    fn unaligned() {
        let a: Vec<u8> = (0..64).collect();
        let mut b = a.clone();
        b[40] = 0;
        for start in 0..8 {
            assert_eq!(
                compare(&a[start..start + 48], &b[start..start + 48]),
                Ordering::Greater
            );
            assert_eq!(
                compare(&a[start..start + 16], &b[start..start + 16]),
                Ordering::Equal
            );
        }
    }
}
