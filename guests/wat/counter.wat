;; A counter written by hand in WebAssembly text: the Hotswap ABI (see the `hotswap-abi` crate)
;; with no SDK. Messages: `inc` adds 10, `get` reads; both reply `counter-wat: value=N`.
;;
;; Its state is encoded exactly as the Rust SDK encodes the Rust counters' state (MessagePack:
;; a one-entry map {"value": int}), so this module can be swapped in over counter v1 or v2 and
;; back, keeping the value.
;;
;; Memory layout (one 64 KiB page is all it needs, two for headroom):
;;   16..24      output descriptor: { ptr: u32, len: u32 }
;;   256..       constant strings (data segments below)
;;   512..600    output scratch: replies and exported state
;;   4096..69632 the input buffer (64 KiB)
(module
  (memory (export "memory") 2)

  ;; The app's state: one 64-bit integer.
  (global $value (mut i64) (i64.const 0))

  (data (i32.const 256) "counter-wat: value=")                ;; 19 bytes
  (data (i32.const 320) "error: expected inc or get")         ;; 26 bytes
  (data (i32.const 384) "counter-wat: unreadable state")      ;; 29 bytes
  (data (i32.const 448) "\81\a5value")                        ;; 7 bytes: map(1), str(5) "value"

  (func (export "hotswap_abi_version") (result i32) (i32.const 1))
  (func (export "hotswap_state_version") (result i32) (i32.const 1))
  (func (export "hotswap_output") (result i32) (i32.const 16))

  ;; One fixed 64 KiB input buffer; larger inputs cannot be taken (0 = cannot allocate).
  (func (export "hotswap_reserve") (param $len i32) (result i32)
    (if (result i32) (i32.le_u (local.get $len) (i32.const 65536))
      (then (i32.const 4096))
      (else (i32.const 0))))

  ;; Describe the output and return the status.
  (func $output (param $ptr i32) (param $len i32) (param $status i32) (result i32)
    (i32.store (i32.const 16) (local.get $ptr))
    (i32.store (i32.const 20) (local.get $len))
    (local.get $status))

  (func (export "hotswap_start") (result i32)
    (global.set $value (i64.const 0))
    (call $output (i32.const 0) (i32.const 0) (i32.const 0)))

  (func (export "hotswap_tick") (param $now_ms i64) (result i32)
    (call $output (i32.const 0) (i32.const 0) (i32.const 0)))

  ;; State out: 81 a5 "value" d3 <i64 big-endian> (16 bytes at 512).
  (func (export "hotswap_export_state") (result i32)
    (local $i i32)
    (memory.copy (i32.const 512) (i32.const 448) (i32.const 7))
    (i32.store8 (i32.const 519) (i32.const 0xd3))
    (loop $bytes
      (i32.store8 (i32.add (i32.const 520) (local.get $i))
        (i32.wrap_i64 (i64.shr_u (global.get $value)
          (i64.extend_i32_u (i32.sub (i32.const 56) (i32.mul (local.get $i) (i32.const 8)))))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $bytes (i32.lt_u (local.get $i) (i32.const 8))))
    (call $output (i32.const 512) (i32.const 16) (i32.const 0)))

  ;; Read `n` bytes at `ptr` as a big-endian unsigned integer.
  (func $read_be (param $ptr i32) (param $n i32) (result i64)
    (local $acc i64)
    (block $done
      (loop $bytes
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $acc (i64.or (i64.shl (local.get $acc) (i64.const 8))
                                (i64.load8_u (local.get $ptr))))
        (local.set $ptr (i32.add (local.get $ptr) (i32.const 1)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $bytes)))
    (local.get $acc))

  ;; State in: the same map, with the integer in any MessagePack integer format.
  (func (export "hotswap_import_state") (param $len i32) (param $version i32) (result i32)
    (local $marker i32) (local $n i32) (local $v i64) (local $i i32)
    (block $refuse
      (br_if $refuse (i32.ne (local.get $version) (i32.const 1)))
      (br_if $refuse (i32.lt_u (local.get $len) (i32.const 8)))
      ;; the 7-byte prefix must match
      (loop $prefix
        (br_if $refuse (i32.ne (i32.load8_u (i32.add (i32.const 4096) (local.get $i)))
                               (i32.load8_u (i32.add (i32.const 448) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $prefix (i32.lt_u (local.get $i) (i32.const 7))))
      (local.set $marker (i32.load8_u (i32.const 4103)))
      (block $decoded
        ;; positive fixint 0x00..0x7f, negative fixint 0xe0..0xff: the marker is the value
        (if (i32.le_u (local.get $marker) (i32.const 0x7f))
          (then (local.set $v (i64.extend_i32_u (local.get $marker))) (br $decoded)))
        (if (i32.ge_u (local.get $marker) (i32.const 0xe0))
          (then (local.set $v (i64.extend8_s (i64.extend_i32_u (local.get $marker)))) (br $decoded)))
        ;; 0xcc..0xcf: unsigned 8/16/32/64; 0xd0..0xd3: signed 8/16/32/64
        (br_if $refuse (i32.lt_u (local.get $marker) (i32.const 0xcc)))
        (br_if $refuse (i32.gt_u (local.get $marker) (i32.const 0xd3)))
        (local.set $n (i32.shl (i32.const 1) (i32.and (i32.sub (local.get $marker) (i32.const 0xcc)) (i32.const 3))))
        (br_if $refuse (i32.ne (local.get $len) (i32.add (i32.const 8) (local.get $n))))
        (local.set $v (call $read_be (i32.const 4104) (local.get $n)))
        (if (i32.ge_u (local.get $marker) (i32.const 0xd0))
          (then
            (if (i32.eq (local.get $n) (i32.const 1)) (then (local.set $v (i64.extend8_s (local.get $v)))))
            (if (i32.eq (local.get $n) (i32.const 2)) (then (local.set $v (i64.extend16_s (local.get $v)))))
            (if (i32.eq (local.get $n) (i32.const 4)) (then (local.set $v (i64.extend32_s (local.get $v))))))))
      (global.set $value (local.get $v))
      (return (call $output (i32.const 0) (i32.const 0) (i32.const 0))))
    (call $output (i32.const 384) (i32.const 29) (i32.const 1)))

  ;; Reply "counter-wat: value=<decimal>" at 512.
  (func $reply (result i32)
    (local $v i64) (local $p i32) (local $neg i32) (local $len i32)
    (memory.copy (i32.const 512) (i32.const 256) (i32.const 19))
    (local.set $v (global.get $value))
    (local.set $neg (i64.lt_s (local.get $v) (i64.const 0)))
    (if (local.get $neg) (then (local.set $v (i64.sub (i64.const 0) (local.get $v)))))
    ;; digits right to left, ending at 600; unsigned division also handles i64::MIN
    (local.set $p (i32.const 600))
    (loop $digits
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $v) (i64.const 10)))))
      (local.set $v (i64.div_u (local.get $v) (i64.const 10)))
      (br_if $digits (i64.ne (local.get $v) (i64.const 0))))
    (if (local.get $neg)
      (then (local.set $p (i32.sub (local.get $p) (i32.const 1)))
            (i32.store8 (local.get $p) (i32.const 45))))
    (local.set $len (i32.sub (i32.const 600) (local.get $p)))
    (memory.copy (i32.const 531) (local.get $p) (local.get $len))
    (call $output (i32.const 512) (i32.add (i32.const 19) (local.get $len)) (i32.const 0)))

  (func (export "hotswap_message") (param $len i32) (result i32)
    (if (i32.eq (local.get $len) (i32.const 3))
      (then
        ;; "inc" and "get" as little-endian 24-bit words
        (if (i32.eq (i32.and (i32.load (i32.const 4096)) (i32.const 0xffffff)) (i32.const 0x636e69))
          (then (global.set $value (i64.add (global.get $value) (i64.const 10)))
                (return (call $reply))))
        (if (i32.eq (i32.and (i32.load (i32.const 4096)) (i32.const 0xffffff)) (i32.const 0x746567))
          (then (return (call $reply))))))
    (call $output (i32.const 320) (i32.const 26) (i32.const 1)))
)
