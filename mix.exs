# Mix project for erlang_python, beside rebar.config: an Elixir project can
# depend on this repository ({:erlang_python, path: "..."} or git:) and
# `mix compile` builds the Erlang sources in src/, the Elixir API in lib/
# (module Python) and the NIF (make -C c_src -> priv/py_nif.so).  No Hex
# packages.  Mix builds to _build/dev and _build/test, rebar3 to
# _build/default; both use the one priv/py_nif.so.

defmodule Mix.Tasks.Compile.ErlangPythonNif do
  @shortdoc "Builds the erlang_python NIF (make -C c_src -> priv/py_nif.so)"
  @moduledoc """
  Builds the NIF with the project's own make (`make -C c_src`), as rebar3's
  pre_hook does; make decides what is out of date.  `mix clean` runs
  `make -C c_src clean`.  MAKE picks the make binary.
  """
  use Mix.Task.Compiler

  @root Path.expand(__DIR__)

  @impl Mix.Task.Compiler
  def run(_args) do
    nif = Path.join([@root, "priv", "py_nif.so"])
    before = mtime(nif)

    case make([]) do
      0 ->
        copy_into_build(nif)
        if mtime(nif) == before, do: {:noop, []}, else: {:ok, []}

      status ->
        Mix.raise("erlang_python: `make -C c_src` failed (exit status #{status})")
    end
  end

  @impl Mix.Task.Compiler
  def clean do
    _ = make(["clean"])
    :ok
  end

  defp make(targets) do
    make = System.get_env("MAKE", "make")

    unless System.find_executable(make) do
      Mix.raise("erlang_python: `#{make}` not found; the NIF is built with make (and gcc)")
    end

    {_, status} =
      System.cmd(make, ["-s", "-C", Path.join(@root, "c_src") | targets],
        into: IO.stream(:stdio, :line),
        stderr_to_stdout: true
      )

    status
  end

  # Mix links _build/ENV/lib/erlang_python/priv to priv/, or copies it
  # (build_embedded: true), before the compilers run: a copy may lack the
  # NIF just built, so it is copied there too.
  defp copy_into_build(nif) do
    target = Path.join([Mix.Project.app_path(), "priv", "py_nif.so"])

    case File.read_link(Path.join(Mix.Project.app_path(), "priv")) do
      {:ok, _} ->
        :ok

      {:error, _} ->
        File.mkdir_p!(Path.dirname(target))
        if mtime(target) != mtime(nif), do: File.cp!(nif, target)
        :ok
    end
  end

  defp mtime(path) do
    case File.stat(path, time: :posix) do
      {:ok, %File.Stat{mtime: mtime}} -> mtime
      {:error, _} -> nil
    end
  end
end

defmodule ErlangPython.MixProject do
  use Mix.Project

  # The application resource is src/erlang_python.app.src, read here so the
  # two builds agree (Mix writes the .app from application/0, rebar3 from
  # the .app.src): description, registered, env, licenses, applications.
  @app_src Path.join(__DIR__, "src/erlang_python.app.src")
  {:ok, [{:application, :erlang_python, app_props}]} = :file.consult(@app_src)
  @app_props app_props

  {:ok, rebar_config} = :file.consult(Path.join(__DIR__, "rebar.config"))
  @erl_opts Keyword.get(rebar_config, :erl_opts, [:debug_info])

  def project do
    [
      app: :erlang_python,
      version: to_string(Keyword.fetch!(@app_props, :vsn)),
      elixir: "~> 1.14",
      description: to_string(Keyword.fetch!(@app_props, :description)),
      # The NIF first, then Mix's own (erlang for src/, elixir for lib/, app).
      compilers: [:erlang_python_nif] ++ Mix.compilers(),
      erlc_paths: ["src"],
      # rebar.config's erl_opts: debug_info, warnings_as_errors,
      # warn_missing_spec (every export in src/ has a -spec).
      erlc_options: @erl_opts,
      elixirc_paths: ["lib"],
      test_paths: ["test/elixir"],
      deps: []
    ]
  end

  def application do
    # Mix 1.14 does not know optional applications in releases (it refuses
    # one that is not installed): an optional application of the .app.src
    # (telemetry) is listed only when its .app is in the code path.
    optional =
      for app <- Keyword.get(@app_props, :optional_applications, []), installed?(app), do: app

    optional_absent = Keyword.get(@app_props, :optional_applications, []) -- optional
    apps = Keyword.get(@app_props, :applications, [:kernel, :stdlib]) -- optional_absent

    [
      mod: Keyword.fetch!(@app_props, :mod),
      registered: Keyword.get(@app_props, :registered, []),
      # As the .app.src, plus elixir (lib/ is Elixir); given in full, since
      # Mix 1.14 also drops optional ones from extra_applications.
      applications: Enum.uniq([:kernel, :stdlib, :elixir | apps]),
      optional_applications: optional,
      env: Keyword.get(@app_props, :env, []),
      licenses: Keyword.get(@app_props, :licenses, []),
      links: Keyword.get(@app_props, :links, [])
    ]
  end

  defp installed?(app), do: :code.where_is_file(~c"#{app}.app") != :non_existing
end
