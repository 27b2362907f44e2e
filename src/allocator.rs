//! A per-thread cache of small freed blocks in front of the C library's allocator.
//!
//! A 4 KiB GET makes about 36 allocations and as many frees (head fields, header values, the
//! ETag and dates, the log line). The shipped binary is linked with musl, whose allocator takes
//! one lock for every call from every thread and unmaps a size class's memory as soon as its
//! last block is freed, so a request that frees what it allocated made it map and unmap pages
//! again each time (`mmap` + `munmap`, each a cross-CPU TLB flush): the static binary served
//! half the 4 KiB GETs per second of the same code linked with glibc. Allocators that fix this
//! (mimalloc, jemalloc) keep megabytes per thread (idle RSS 3–18 MiB against 1.6 for a server
//! with 128 workers), so instead each thread keeps the small blocks it freed, up to
//! [`THREAD_BUDGET_BYTES`], and hands them out again without a lock or a system call.
//!
//! Blocks up to [`LARGEST_CACHED`] bytes are rounded up to a power of two (a *class*) and always
//! allocated from the C allocator with that size and [`CLASS_ALIGN`], so any thread may keep or
//! free any of them; larger or more aligned requests go straight through. A thread's cache is
//! never returned: the server's threads live as long as the process, and a thread that exits
//! leaves at most its budget behind.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr;

/// Smallest class, in bytes (`1 << SMALLEST_SHIFT`).
const SMALLEST_SHIFT: u32 = 4;
/// Number of classes: 16 B, 32 B, ... 8 KiB.
const CLASSES: usize = 10;
/// Largest size kept, in bytes: the largest class.
const LARGEST_CACHED: usize = 1 << (SMALLEST_SHIFT as usize + CLASSES - 1);
/// Alignment every cached block is allocated with (what `malloc` gives on x86-64 and arm64).
const CLASS_ALIGN: usize = 16;
/// Most blocks a thread keeps per class.
const PER_CLASS: usize = 16;
/// Most bytes of freed blocks one thread keeps, all classes together: 128 workers can then
/// hold at most 8 MiB, and a thread that served nothing holds none.
const THREAD_BUDGET_BYTES: usize = 64 * 1024;

/// The global allocator of the `http-nas` binary (see the module doc).
pub struct ThreadCache;

/// One thread's kept blocks: per class a stack linked through the blocks themselves (each
/// kept block's first word points to the next).
struct Kept {
    heads: [*mut u8; CLASSES],
    counts: [u8; CLASSES],
    bytes: usize,
}

thread_local! {
    /// This thread's [`Kept`], made on its first use with `calloc` (all empty). Only a pointer
    /// lives in thread-local storage: that area is laid out beside every thread's stack, and
    /// the whole struct there pushed it across a page boundary, a page more for each of the
    /// server's threads (+0.5 MiB RSS at start). No destructor, so using it never allocates
    /// (registering one would) and it can be used while the thread is being torn down.
    static KEPT: Cell<*mut Kept> = const { Cell::new(ptr::null_mut()) };
}

/// Runs `f` on this thread's [`Kept`]; `None` if there is none and none can be made.
fn with_kept<T>(f: impl FnOnce(&mut Kept) -> T) -> Option<T> {
    KEPT.try_with(|cell| {
        let mut kept = cell.get();
        if kept.is_null() {
            // SAFETY: calloc of one Kept; all-zero bytes are a valid empty Kept (null heads,
            // zero counts).
            kept = unsafe { libc::calloc(1, std::mem::size_of::<Kept>()) }.cast::<Kept>();
            if kept.is_null() {
                return None;
            }
            cell.set(kept);
        }
        // SAFETY: the Kept is this thread's own, and no reference to it outlives this call;
        // nothing `f` does calls back into the allocator.
        Some(f(unsafe { &mut *kept }))
    })
    .ok()
    .flatten()
}

/// The class of `layout`, if blocks of it are cached.
fn class_of(layout: Layout) -> Option<usize> {
    if layout.size() > LARGEST_CACHED || layout.align() > CLASS_ALIGN {
        return None;
    }
    let size = layout.size().max(1 << SMALLEST_SHIFT);
    Some((size.next_power_of_two().trailing_zeros() - SMALLEST_SHIFT) as usize)
}

/// The layout every block of `class` is allocated with.
fn class_layout(class: usize) -> Layout {
    // SAFETY: a power of two up to LARGEST_CACHED with the power-of-two CLASS_ALIGN is valid.
    unsafe { Layout::from_size_align_unchecked(1 << (class + SMALLEST_SHIFT as usize), CLASS_ALIGN) }
}

/// A kept block of `class`, if this thread has one.
fn take(class: usize) -> Option<*mut u8> {
    with_kept(|kept| {
        let block = kept.heads[class];
        if block.is_null() {
            return None;
        }
        // SAFETY: a kept block is at least 16 bytes, 16-aligned, owned by this list, and its
        // first word was set by `keep`.
        kept.heads[class] = unsafe { block.cast::<*mut u8>().read() };
        kept.counts[class] -= 1;
        kept.bytes -= class_layout(class).size();
        Some(block)
    })
    .flatten()
}

/// Keeps `block` of `class` if this thread has room; false if the caller must free it.
fn keep(block: *mut u8, class: usize) -> bool {
    with_kept(|kept| {
        let size = class_layout(class).size();
        if usize::from(kept.counts[class]) >= PER_CLASS || kept.bytes + size > THREAD_BUDGET_BYTES {
            return false;
        }
        // SAFETY: the caller gave up the block (at least 16 bytes, 16-aligned): its first word
        // now links the list.
        unsafe { block.cast::<*mut u8>().write(kept.heads[class]) };
        kept.heads[class] = block;
        kept.counts[class] += 1;
        kept.bytes += size;
        true
    })
    .unwrap_or(false)
}

// Each method is `inline(never)`: inlined into the binary's thousands of allocation sites, the
// cache added 170 KiB of code to the static binary (its image must stay under 1.5 MiB).
// SAFETY: every block handed out is either straight from `System` with the caller's layout (not
// cached classes) or a block of at least the caller's size and alignment allocated from `System`
// with its class's layout, and is given back to `System` with the layout it was allocated with;
// a kept block is owned by exactly one thread's cache until handed out again.
unsafe impl GlobalAlloc for ThreadCache {
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class_of(layout) {
            // SAFETY: the caller's layout has a non-zero size, as GlobalAlloc requires.
            None => unsafe { System.alloc(layout) },
            // SAFETY: a class layout has a non-zero size.
            Some(class) => take(class).unwrap_or_else(|| unsafe { System.alloc(class_layout(class)) }),
        }
    }

    #[inline(never)]
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        match class_of(layout) {
            // SAFETY: a block of this layout came from System with this layout.
            None => unsafe { System.dealloc(block, layout) },
            Some(class) => {
                if !keep(block, class) {
                    // SAFETY: blocks of a class come from System with the class's layout.
                    unsafe { System.dealloc(block, class_layout(class)) }
                }
            }
        }
    }

    #[inline(never)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match class_of(layout) {
            // SAFETY: as in `alloc`; large zeroed blocks keep calloc's fresh zero pages.
            None => unsafe { System.alloc_zeroed(layout) },
            Some(_) => {
                // SAFETY: as in `alloc`; the block is at least layout.size() bytes.
                unsafe {
                    let block = self.alloc(layout);
                    if !block.is_null() {
                        ptr::write_bytes(block, 0, layout.size());
                    }
                    block
                }
            }
        }
    }

    #[inline(never)]
    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: new_size is non-zero and, rounded up to the alignment, fits isize (the
        // caller's promise).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class_of(layout), class_of(new_layout)) {
            // Still fits the block it has.
            (Some(old), Some(new)) if old == new => block,
            // SAFETY: both sizes are beyond the classes: the block came from System with
            // `layout`, as the caller's promise requires.
            (None, None) => unsafe { System.realloc(block, layout, new_size) },
            _ => {
                // SAFETY: new_layout is valid (above); on success both blocks are live and at
                // least min(old, new) bytes long, and the old one is freed with its own layout.
                unsafe {
                    let moved = self.alloc(new_layout);
                    if !moved.is_null() {
                        ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                    moved
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_fall_into_the_classes_they_fit() {
        let class = |size, align| class_of(Layout::from_size_align(size, align).unwrap());
        assert_eq!(class(1, 1), Some(0));
        assert_eq!(class(16, 8), Some(0));
        assert_eq!(class(17, 8), Some(1));
        assert_eq!(class(4096, 16), Some(8));
        assert_eq!(class(LARGEST_CACHED, 16), Some(CLASSES - 1));
        assert_eq!(class(LARGEST_CACHED + 1, 16), None);
        assert_eq!(
            class(64, 64),
            None,
            "an alignment beyond the classes' goes straight through"
        );
        for size in [1, 15, 16, 100, 4095, 4097, LARGEST_CACHED] {
            let c = class(size, 8).unwrap();
            assert!(class_layout(c).size() >= size);
        }
    }

    #[test]
    fn a_freed_block_is_handed_out_again_and_the_budget_holds() {
        let a = ThreadCache;
        let layout = Layout::from_size_align(100, 8).unwrap();
        // SAFETY: blocks are used within their layouts and freed once each.
        unsafe {
            let first = a.alloc(layout);
            assert!(!first.is_null());
            a.dealloc(first, layout);
            let again = a.alloc(layout);
            assert_eq!(again, first, "the kept block comes back");
            again.write_bytes(7, 100);
            // Growing within the class keeps the block and its bytes.
            let grown = a.realloc(again, layout, 120);
            assert_eq!(grown, again);
            // Growing past it moves the bytes.
            let moved = a.realloc(grown, Layout::from_size_align(120, 8).unwrap(), 5000);
            assert_eq!(std::slice::from_raw_parts(moved, 100), &[7u8; 100][..]);
            // And past the classes, to the C allocator.
            let large = a.realloc(moved, Layout::from_size_align(5000, 8).unwrap(), 50_000);
            assert_eq!(std::slice::from_raw_parts(large, 100), &[7u8; 100][..]);
            a.dealloc(large, Layout::from_size_align(50_000, 8).unwrap());
            let zeroed = a.alloc_zeroed(layout);
            assert_eq!(std::slice::from_raw_parts(zeroed, 100), &[0u8; 100][..]);
            a.dealloc(zeroed, layout);
            // Freeing more than the budget keeps at most the budget.
            let big = Layout::from_size_align(LARGEST_CACHED, 8).unwrap();
            let blocks: Vec<*mut u8> = (0..PER_CLASS).map(|_| a.alloc(big)).collect();
            for b in blocks {
                a.dealloc(b, big);
            }
            let kept = with_kept(|k| k.bytes).unwrap();
            assert!(kept <= THREAD_BUDGET_BYTES, "{kept} bytes kept");
        }
    }
}
