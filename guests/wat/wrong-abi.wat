;; A module that claims ABI version 99: the host must refuse it before touching the running app.
;; Apart from the version it has every export of ABI version 1, so only the version check fails.
(module
  (memory (export "memory") 1)
  (func (export "hotswap_abi_version") (result i32) (i32.const 99))
  (func (export "hotswap_state_version") (result i32) (i32.const 1))
  (func (export "hotswap_output") (result i32) (i32.const 16))
  (func (export "hotswap_reserve") (param i32) (result i32) (i32.const 1024))
  (func (export "hotswap_start") (result i32) (i32.const 0))
  (func (export "hotswap_import_state") (param i32 i32) (result i32) (i32.const 0))
  (func (export "hotswap_export_state") (result i32) (i32.const 0))
  (func (export "hotswap_message") (param i32) (result i32) (i32.const 0))
  (func (export "hotswap_tick") (param i64) (result i32) (i32.const 0))
)
