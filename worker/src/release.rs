//! [`release_pages`]: how the owner of shared memory frees it while others
//! still map it (regions and packs alike).

use ipc_channel::ipc::IpcSharedMemory;

/// Frees the pages of a shared-memory region, in every process that maps it:
/// they read as zeros afterwards. For the owner of a region about to drop it,
/// when other processes may keep it mapped without reading it. Only a hint:
/// where it fails, the pages are freed when the last mapping goes.
pub fn release_pages(region: &mut IpcSharedMemory) {
    if region.is_empty() {
        return;
    }
    // SAFETY: the range is exactly this live mapping (shared memory starts on
    // a page boundary), and `&mut` means no reference into it is alive in
    // this process. MADV_REMOVE punches a hole in the memfd: no byte of this
    // process's memory is reinterpreted, pages just read as zeros.
    unsafe {
        nix::libc::madvise(region.as_ptr() as *mut _, region.len(), nix::libc::MADV_REMOVE);
    }
}
