// Package watch tells the launcher when the command's binary, or anything
// under a --watch path, has really changed on disk, so that it can start a
// new generation.
//
// The main type is [Watcher]. [New] resolves the command the way a shell
// would ([Resolve]: a PATH lookup for a name without a slash, relative paths
// against the working directory, symlinks followed), takes a fingerprint of
// what it resolves to, and watches, with fsnotify (inotify on Linux):
//
//   - the parent directory of the command's path and of every symlink met
//     while resolving it, file and directory symlinks alike (./current/app
//     with current -> releases/v1 watches the directory holding "current"
//     and releases/v1), each filtered by name. A watch on the file itself
//     would be lost on the first rename over it. After every Create, Remove
//     or Rename of a watched name the command is resolved again and the
//     watches follow; for a command found through PATH, every PATH directory
//     up to the one it was found in is watched, so a new file shadowing it
//     is seen too. A missing directory along the path is watched for through
//     its nearest existing parent.
//   - every --watch path: a file (through its parent directory, like the
//     binary) or a directory and, recursively, all its subdirectories,
//     new ones included. Editor droppings (*.swp, *.swx, *~, .#*, 4913) and
//     .git directories are ignored, and so are attribute-only (chmod, touch)
//     events.
//
// Events are debounced: a [Change] is sent once no event has arrived for
// Options.Debounce, or at the latest Options.MaxDelay after the first event of
// a burst, so a slow copy, an install (remove, create, writes, chmod) or a
// rename dance is one change.
//
// For the binary, a Change is sent only when the command resolves to a valid
// executable whose content differs from what was there at New or at the last
// Change:
//
//   - The fingerprint is (device, inode, size, mtime, ctime) of the resolved
//     file. An unchanged fingerprint is no change, without reading the file.
//   - A changed fingerprint with a different size, or a different resolved
//     path (a symlink swap to another release), is a change.
//   - A changed fingerprint with the same size is settled by content,
//     compared with the previous content (taken at New or at the last
//     Change) through 64-bit hashes (hash/maphash) of prefixes: the first 64 KiB, 128 KiB,
//     256 KiB, doubling, and the whole file. The new file is hashed prefix
//     by prefix and the comparison stops at the first prefix that differs:
//     two builds of a Go program differ in their build ID, in the first
//     page, so a new build is told after reading 64 KiB. Only the same
//     content is read to its end. So touch, chmod, a rebuild that produced
//     the same bytes, or a copy of the same file renamed over it or written
//     into it are not changes.
//   - The previous content is known by its hashes, not by its file, which
//     may be renamed over, removed or rewritten. The watcher hashes a new
//     version to its end after its Change has been taken (so that the
//     launcher is not kept waiting), through the descriptor it opened it
//     with: the inode stays the same even if the name is renamed over in
//     the meantime. That is the one descriptor it keeps open besides
//     inotify's, for the milliseconds this takes, and Close closes it. Should
//     the file be written in place (its size or modification time changed)
//     before it was hashed to its end, the next version is a change whatever
//     its content.
//   - Valid means: a regular file with an execute bit whose header is whole.
//     For ELF, the ELF header is present and both the program header table
//     and the section header table end within the file size (a partial
//     write, as a cross-filesystem "go build -o" or cp makes, fails that
//     until the last write lands; linkers put the section header table at
//     the end) and every loadable segment and every section with bytes
//     ends within it (Go's linker puts the section headers near the start).
//     For a script, the "#!" line ends with a newline. (On macOS, a Mach-O
//     header and its load commands.) Anything else is not reported. At the
//     end of a quiet period it is a deploy as its deployer left it: it is
//     rejected, in one warning with its reason, for every deploy, the same
//     reason again included; the same file found again (a touch, an
//     identical copy: same size and content) is not logged twice. When the
//     debounce ended at MaxDelay, events were still arriving: a deploy still
//     being written, said once and looked at again once they stop. A file
//     that later becomes whole is a Change as usual.
//   - A binary that is gone when the debounce ends is logged once (warning),
//     without a Change; once it is back and valid, a Change is sent, even if
//     the new file has the same content: it was deleted and redeployed.
//
// Under --watch paths any create, write, remove or rename after the debounce
// is a Change listing the files (Change.Files, at most 20).
//
// When the kernel's inotify queue overflows, the watcher rescans: it adds its
// watches again, compares the binary's fingerprint (a Change if it differs)
// and, since events under --watch paths may have been lost, conservatively
// sends a Change for them. Running out of inotify watches (ENOSPC) or
// instances (EMFILE) is an error naming the sysctl to raise.
//
// An idle Watcher uses no CPU: it blocks on the inotify descriptor; a timer
// exists only while a debounce is pending.
package watch
