;; hello.wasm: prints "hello, <first argument>" (or "hello, world") to stdout. A WASI preview1 command.
(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello, ")
  (data (i32.const 32) "\n")
  (data (i32.const 40) "world")

  ;; length of the NUL-terminated string at $p
  (func $strlen (param $p i32) (result i32)
    (local $n i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $next)))
    (local.get $n))

  (func (export "_start")
    (local $argc i32)
    (local $name i32)
    (local $len i32)
    ;; argc at 0, argv buffer size at 4
    (drop (call $args_sizes_get (i32.const 0) (i32.const 4)))
    (local.set $argc (i32.load (i32.const 0)))
    (local.set $name (i32.const 40))
    (local.set $len (i32.const 5))
    (if (i32.gt_u (local.get $argc) (i32.const 1))
      (then
        ;; argv pointers at 1024, their bytes at 4096 (one page holds up to 60 KiB of arguments)
        (if (i32.le_u (i32.load (i32.const 4)) (i32.const 61440))
          (then
            (drop (call $args_get (i32.const 1024) (i32.const 4096)))
            (local.set $name (i32.load (i32.const 1028)))
            (local.set $len (call $strlen (local.get $name)))))))
    ;; three iovecs at 64: "hello, ", the name, "\n"
    (i32.store (i32.const 64) (i32.const 16))
    (i32.store (i32.const 68) (i32.const 7))
    (i32.store (i32.const 72) (local.get $name))
    (i32.store (i32.const 76) (local.get $len))
    (i32.store (i32.const 80) (i32.const 32))
    (i32.store (i32.const 84) (i32.const 1))
    (drop (call $fd_write (i32.const 1) (i32.const 64) (i32.const 3) (i32.const 8)))))
