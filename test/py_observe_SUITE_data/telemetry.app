{application, telemetry,
 [{description, "stand-in for telemetry (tests only)"},
  {vsn, "0.0.0"},
  {modules, [telemetry]},
  {registered, []},
  {applications, [kernel, stdlib]},
  {mod, {telemetry, []}}]}.
