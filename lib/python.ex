defmodule Python do
  @moduledoc """
  Call Python from Elixir: the Elixir API of erlang_python, over the Erlang
  module `:py`. CPython is embedded in the BEAM through a NIF; Python runs on
  a pool of worker threads (never on a scheduler) and each call waits for
  its answer as a message.

      {:ok, 4.0} = Python.call(:math, :sqrt, [16])
      {:ok, [0, 2, 4, 6]} = Python.eval("[x * 2 for x in range(4)]")
      {:ok, "[1, 2]"} = Python.call(:json, :dumps, [[1, 2]])
      {:error, %Python.Error{type: :ZeroDivisionError}} = Python.eval("1 / 0")
      4.0 = Python.call!(:math, :sqrt, [16])

  The application `:erlang_python` must be started (it is when your project
  depends on it; `Application.ensure_all_started(:erlang_python)` in a
  script).

  ## Results and errors

  The plain functions return `{:ok, value}` (`:ok` for `exec/3`) or
  `{:error, %Python.Error{}}`; the bang functions return the value or raise
  the `Python.Error`. A Python exception sets `:type`, `:message` and
  `:traceback`; the other failures (`:timeout`, `:no_workers_available`,
  `:worker_crashed`, `:not_running`, `{:badarg, what}`,
  `{:overloaded, current, max}`, `:context_not_bound`) are in `:reason`.
  Invalid options raise `ArgumentError`.

  ## Values

  Arguments and results convert directly (see docs/types.md): integers,
  floats, booleans, strings (binaries, UTF-8) <-> `str`, lists, tuples,
  maps <-> `dict`, local pids. `nil` (and `:none`) become `None`; `None`
  comes back as `:none`, other atoms go as `str`, `{:bytes, binary}` as
  `bytes`. Charlists are lists of integers: use strings for text. Module
  and function names are atoms or strings (`:"os.path"`, `"os.path"`).

  ## Options

    * `timeout:` - milliseconds or `:infinity` (default 30 000). When it
      passes, running Python code is interrupted and the call returns
      `{:error, %Python.Error{reason: :timeout}}`.
    * `kwargs:` - keyword arguments of a call, a keyword list or a map.
    * `locals:` - names visible to `eval/exec` code for this call only,
      a map or a keyword list (or give a map as the second argument).
    * `context:` - a `Python.Context` to run on (the `Python.Context`
      functions pass it for you).

  ## Keeping Python state: context affinity

  An unbound call runs on whichever worker is free, so what one call
  defines may be missing from the next. `bind/0` gives the calling process
  a worker of its own until `unbind/0`; `with_context/1` does it for the
  length of a function; `Python.Context` holds a worker as a value.
  See docs/context-affinity.md and docs/elixir.md.
  """

  alias Python.{Context, Error}

  @typedoc "A Python module or function name: `:math`, `:\"os.path\"`, `\"os.path\"`, `:__main__`."
  @type name :: atom() | String.t()

  @typedoc "Python source code (a string or iodata)."
  @type code :: iodata()

  @typedoc "Names visible to `eval`/`exec` code for one call."
  @type locals :: %{optional(atom() | String.t()) => term()}

  @typedoc "Keyword arguments of a Python call."
  @type kwargs :: keyword() | %{optional(atom() | String.t()) => term()}

  @typedoc "Options of `call/4` and `Python.Context.call/5`."
  @type call_option :: {:timeout, timeout()} | {:kwargs, kwargs()} | {:context, Context.t()}

  @typedoc "Options of `eval/3`, `exec/3` and their context forms."
  @type code_option ::
          {:timeout, timeout()} | {:locals, locals() | keyword()} | {:context, Context.t()}

  @typedoc "The outcome of a call."
  @type result :: {:ok, term()} | {:error, Error.t()}

  # ---------------------------------------------------------------- calls

  @doc """
  Calls `module.function(*args, **kwargs)`.

  Options: `timeout:`, `kwargs:`, `context:`. `module` may be dotted
  (`:"os.path"`); `:__main__` names the worker's namespace, where functions
  that `exec/3` defined live (useful on a bound worker or a context).

      iex> Python.call(:math, :sqrt, [16])
      {:ok, 4.0}

      iex> Python.call(:json, :dumps, [%{"b" => 1, "a" => 2}], kwargs: [sort_keys: true])
      {:ok, ~s({"a": 2, "b": 1})}

      iex> {:error, %Python.Error{type: :ModuleNotFoundError}} = Python.call(:no_such_module, :f)
  """
  @spec call(name(), name(), list(), [call_option()]) :: result()
  def call(module, function, args \\ [], opts \\ []) do
    opts = validate!(opts, [:timeout, :kwargs, :context], "call")
    kwargs = kwargs!(opts)

    case {opts[:context], Keyword.fetch(opts, :timeout)} do
      {nil, :error} -> :py.call(module, function, args, kwargs)
      {nil, {:ok, t}} -> :py.call(module, function, args, kwargs, timeout!(t))
      {ctx, :error} -> on_ctx(ctx, &:py.ctx_call(&1, module, function, args, kwargs))
      {ctx, {:ok, t}} -> on_ctx(ctx, &:py.ctx_call(&1, module, function, args, kwargs, timeout!(t)))
    end
    |> result()
  end

  @doc """
  `call/4`, returning the value or raising `Python.Error`.

      iex> Python.call!(:math, :sqrt, [16])
      4.0
  """
  @spec call!(name(), name(), list(), [call_option()]) :: term()
  def call!(module, function, args \\ [], opts \\ []),
    do: unwrap!(call(module, function, args, opts))

  @doc """
  Evaluates one Python expression.

  `locals` (a map) are visible to the expression for this call only. The
  second argument may instead be the options: `timeout:`, `locals:`,
  `context:`.

      iex> Python.eval("[x * y for y in range(4)]", %{x: 10})
      {:ok, [0, 10, 20, 30]}

      iex> Python.eval("x + 1", locals: [x: 41], timeout: 5_000)
      {:ok, 42}
  """
  @spec eval(code(), locals() | [code_option()], [code_option()]) :: result()
  def eval(code, locals \\ %{}, opts \\ [])
  def eval(code, opts, []) when is_list(opts), do: eval(code, %{}, opts)

  def eval(code, locals, opts) do
    {locals, timeout, ctx} = code_opts!(locals, opts, "eval")

    case {ctx, timeout} do
      {nil, nil} -> :py.eval(code, locals)
      {nil, t} -> :py.eval(code, locals, t)
      {ctx, nil} -> on_ctx(ctx, &:py.ctx_eval(&1, code, locals))
      {ctx, t} -> on_ctx(ctx, &:py.ctx_eval(&1, code, locals, t))
    end
    |> result()
  end

  @doc """
  `eval/3`, returning the value or raising `Python.Error`.

      iex> Python.eval!("2 ** 10")
      1024
  """
  @spec eval!(code(), locals() | [code_option()], [code_option()]) :: term()
  def eval!(code, locals \\ %{}, opts \\ []), do: unwrap!(eval(code, locals, opts))

  @doc """
  Runs Python statements in the namespace of the worker that takes them.

  `locals` (a map) are visible for this call only; the second argument may
  instead be the options: `timeout:`, `locals:`, `context:` (with
  `context:`, no `timeout:`, see `Python.Context.exec/4`). What the code
  defines stays on that worker: bind (`bind/0`, `with_context/1`) to find
  it again in the next call.

      iex> Python.exec("import json")
      :ok
  """
  @spec exec(code(), locals() | [code_option()], [code_option()]) :: :ok | {:error, Error.t()}
  def exec(code, locals \\ %{}, opts \\ [])
  def exec(code, opts, []) when is_list(opts), do: exec(code, %{}, opts)

  def exec(code, locals, opts) do
    {locals, timeout, ctx} = code_opts!(locals, opts, "exec")

    case {ctx, timeout} do
      {nil, nil} ->
        :py.exec(code, locals)

      {nil, t} ->
        :py.exec(code, locals, t)

      {ctx, nil} ->
        on_ctx(ctx, &:py.ctx_exec(&1, code, locals))

      {ctx, t} ->
        on_ctx(ctx, &:py.ctx_exec(&1, code, locals, t))
    end
    |> result()
  end

  @doc """
  `exec/3`, returning `:ok` or raising `Python.Error`.
  """
  @spec exec!(code(), locals() | [code_option()], [code_option()]) :: :ok
  def exec!(code, locals \\ %{}, opts \\ []), do: unwrap!(exec(code, locals, opts))

  @doc """
  Calls a generator function (or any function returning an iterable) and
  drains it into a list. Option: `kwargs:`. The timeout is py's fixed 30 s.

      iex> Python.stream(:builtins, :range, [0, 10, 3])
      {:ok, [0, 3, 6, 9]}
  """
  @spec stream(name(), name(), list(), [{:kwargs, kwargs()}]) ::
          {:ok, list()} | {:error, Error.t()}
  def stream(module, function, args \\ [], opts \\ []) do
    opts = validate!(opts, [:kwargs], "stream")
    result(:py.stream(module, function, args, kwargs!(opts)))
  end

  @doc "`stream/4`, returning the list or raising `Python.Error`."
  @spec stream!(name(), name(), list(), [{:kwargs, kwargs()}]) :: list()
  def stream!(module, function, args \\ [], opts \\ []),
    do: unwrap!(stream(module, function, args, opts))

  @typedoc "Options of `stream_start/4` and `lazy_stream/4`."
  @type stream_option ::
          {:kwargs, kwargs()}
          | {:window, pos_integer() | :infinity}
          | {:timeout, timeout()}
          | {:value_timeout, timeout()}
          | {:owner, pid()}
          | {:context, Context.t()}

  @doc """
  Starts an incremental stream: `module.function(*args)` (a generator, an
  async generator or any iterable) runs on a worker, and the owner (the
  caller unless `owner:`) receives `{:py_stream, ref, {:data, value}}` for
  each value as it is produced, then `{:py_stream, ref, :done}` or
  `{:py_stream, ref, {:error, reason}}` (`reason` as the Erlang API gives
  it). At most `window:` values (default 64) wait unacknowledged in the
  owner's mailbox: call `stream_ack/2` for each value handled, or pass
  `window: :infinity`. Other options: `kwargs:`, `timeout:` (the whole
  stream), `value_timeout:` (one value), `context:`. `lazy_stream/4` wraps
  all of it as an Elixir `Stream`. See docs/streaming.md.

      {:ok, ref} = Python.stream_start(:builtins, :range, [2])
      receive do {:py_stream, ^ref, {:data, 0}} -> Python.stream_ack(ref) end
  """
  @spec stream_start(name(), name(), list(), [stream_option()]) ::
          {:ok, reference()} | {:error, Error.t()}
  def stream_start(module, function, args \\ [], opts \\ []) do
    result(:py.stream_start(module, function, args, stream_opts!(opts, "stream_start")))
  end

  @doc "Acknowledges `n` values of a stream (default 1): the generator may produce that many more."
  @spec stream_ack(reference(), pos_integer()) :: :ok
  def stream_ack(ref, n \\ 1), do: :py.stream_ack(ref, n)

  @doc """
  Stops a stream: nothing more arrives for `ref` once this returns, and the
  generator is closed (its `finally` blocks run). `:ok` also for a stream
  that ended.
  """
  @spec stream_cancel(reference()) :: :ok
  def stream_cancel(ref), do: :py.stream_cancel(ref)

  @doc """
  A generator as a lazy Elixir `Stream`: the Python stream starts when the
  `Stream` is enumerated, each value is acknowledged as it is taken, and
  halting early (`Enum.take/2`, `Stream.take_while/2`) cancels it. A Python
  error raises `Python.Error` in the enumerating process. Options as
  `stream_start/4` (not `owner:`).

      iex> Python.lazy_stream(:itertools, :count, [10]) |> Enum.take(3)
      [10, 11, 12]
  """
  @spec lazy_stream(name(), name(), list(), [stream_option()]) :: Enumerable.t()
  def lazy_stream(module, function, args \\ [], opts \\ []) do
    if Keyword.has_key?(opts, :owner) do
      raise ArgumentError, "Python.lazy_stream: owner: is the enumerating process"
    end

    erl_opts = stream_opts!(opts, "lazy_stream")

    Stream.resource(
      fn ->
        case :py.stream_start(module, function, args, erl_opts) do
          {:ok, ref} -> ref
          {:error, reason} -> raise Error.from_reason(reason)
        end
      end,
      fn ref ->
        receive do
          {:py_stream, ^ref, {:data, value}} ->
            :ok = :py.stream_ack(ref)
            {[value], ref}

          {:py_stream, ^ref, :done} ->
            {:halt, ref}

          {:py_stream, ^ref, {:error, reason}} ->
            raise Error.from_reason(reason)
        end
      end,
      fn ref ->
        :ok = :py.stream_cancel(ref)
        flush_stream(ref)
      end
    )
  end

  defp flush_stream(ref) do
    receive do
      {:py_stream, ^ref, _} -> flush_stream(ref)
    after
      0 -> :ok
    end
  end

  defp stream_opts!(opts, fun) do
    opts = validate!(opts, [:kwargs, :window, :timeout, :value_timeout, :owner, :context], fun)

    Enum.reduce(opts, %{}, fn
      {:kwargs, _}, acc ->
        Map.put(acc, :kwargs, kwargs!(opts))

      {:context, %Context{ref: ref}}, acc ->
        Map.put(acc, :ctx, ref)

      {:context, other}, _ ->
        raise ArgumentError, "context: must be a Python.Context, got: #{inspect(other)}"

      {key, value}, acc ->
        Map.put(acc, key, value)
    end)
  end

  @doc """
  The embedded Python's version string, as `sys.version`.

      Python.version()
      #=> "3.11.2 (main, ...) [GCC 12.2.0]"
  """
  @spec version() :: String.t()
  def version do
    {:ok, version} = :py.version()
    version
  end

  # ---------------------------------------------------- context affinity

  @doc """
  Binds the calling process to a worker of its own: its later calls all run
  there, in one namespace, on one OS thread, until `unbind/0` (or until the
  process dies). Binding again is a no-op that keeps the worker.

      :ok = Python.bind()
      :ok = Python.exec("counter = 0")
      :ok = Python.exec("counter += 1")
      {:ok, 1} = Python.eval("counter")
      :ok = Python.unbind()
  """
  @spec bind() :: :ok | {:error, Error.t()}
  def bind, do: result(:py.bind())

  @doc "Releases the calling process's worker (`:ok` also when not bound)."
  @spec unbind() :: :ok
  def unbind, do: :py.unbind()

  @doc "Whether the calling process is bound to a worker (contexts do not count)."
  @spec bound?() :: boolean()
  def bound?, do: :py.is_bound()

  @doc """
  Runs `fun` with a worker held for it, released afterwards, also when
  `fun` raises. Returns what `fun` returns.

    * `fun/0` binds the calling process (if it was bound already, that
      binding is kept and not released); plain calls inside use it.
    * `fun/1` receives a fresh `Python.Context`.

  When no worker can be bound, `fun` is not called and the result is
  `{:error, %Python.Error{reason: :no_workers_available}}`.

      iex> Python.with_context(fn ->
      ...>   :ok = Python.exec("total = sum(range(10))")
      ...>   Python.eval("total")
      ...> end)
      {:ok, 45}

      iex> Python.with_context(fn ctx -> Python.Context.eval(ctx, "__import__('json').dumps([1, 2])") end)
      {:ok, "[1, 2]"}
  """
  @spec with_context((() -> r) | (Context.t() -> r)) :: r | {:error, Error.t()} when r: term()
  def with_context(fun) when is_function(fun, 0) do
    tag = make_ref()
    ran(tag, :py.with_context(fn -> {tag, fun.()} end))
  end

  def with_context(fun) when is_function(fun, 1) do
    tag = make_ref()
    ran(tag, :py.with_context(fn ref -> {tag, fun.(%Context{ref: ref})} end))
  end

  # ------------------------------------------------- Python calling Elixir

  @doc """
  Makes `fun` callable from Python as `erlang.<name>(*args)` (also
  `erlang.call("name", *args)`): `fun` receives the arguments as a list and
  its return value goes back to Python.

      :ok = Python.register_function(:add, fn [a, b] -> a + b end)
      {:ok, 3} = Python.eval("__import__('erlang').add(1, 2)")
  """
  @spec register_function(name(), (list() -> term())) :: :ok
  def register_function(name, fun) when is_function(fun, 1), do: :py.register_function(name, fun)

  @doc "Makes `module.function(args)` (one argument: the list) callable from Python as `erlang.<name>`."
  @spec register_function(name(), module(), atom()) :: :ok
  def register_function(name, module, function) when is_atom(module) and is_atom(function),
    do: :py.register_function(name, module, function)

  @doc "Removes a registered function (`:ok` also when unknown)."
  @spec unregister_function(name()) :: :ok
  def unregister_function(name), do: :py.unregister_function(name)

  # ------------------------------------------------------------ internals

  defp ran(tag, {tag, value}), do: value
  defp ran(_tag, {:error, reason}), do: {:error, Error.from_reason(reason)}

  defp result(:ok), do: :ok
  defp result({:ok, _} = ok), do: ok
  defp result({:error, reason}), do: {:error, Error.from_reason(reason)}

  defp unwrap!(:ok), do: :ok
  defp unwrap!({:ok, value}), do: value
  defp unwrap!({:error, %Error{} = error}), do: raise(error)

  # py raises error(context_not_bound) for a released context; here it is
  # an error like the others.
  defp on_ctx(%Context{ref: ref}, fun) do
    fun.(ref)
  catch
    :error, :context_not_bound -> {:error, :context_not_bound}
  end

  defp on_ctx(other, _fun),
    do: raise(ArgumentError, "context: must be a Python.Context, got: #{inspect(other)}")

  defp code_opts!(locals, opts, fun) do
    opts = validate!(opts, [:timeout, :locals, :context], fun)

    unless is_map(locals) do
      raise ArgumentError, "Python.#{fun}: locals must be a map, got: #{inspect(locals)}"
    end

    locals =
      case Keyword.fetch(opts, :locals) do
        :error -> locals
        {:ok, more} -> Map.merge(to_map!(more, :locals), locals)
      end

    timeout =
      case Keyword.fetch(opts, :timeout) do
        :error -> nil
        {:ok, t} -> timeout!(t)
      end

    {locals, timeout, opts[:context]}
  end

  defp validate!(opts, allowed, fun) do
    unless is_list(opts) and Keyword.keyword?(opts) do
      raise ArgumentError, "Python.#{fun}: options must be a keyword list, got: #{inspect(opts)}"
    end

    case Keyword.keys(opts) -- allowed do
      [] ->
        opts

      unknown ->
        raise ArgumentError,
              "Python.#{fun}: unknown option(s) #{inspect(Enum.uniq(unknown))}, " <>
                "allowed: #{inspect(allowed)}"
    end
  end

  defp kwargs!(opts), do: to_map!(Keyword.get(opts, :kwargs, %{}), :kwargs)

  defp to_map!(map, _what) when is_map(map), do: map

  defp to_map!(list, what) when is_list(list) do
    if Keyword.keyword?(list) do
      Map.new(list)
    else
      raise ArgumentError, "#{what}: must be a map or a keyword list, got: #{inspect(list)}"
    end
  end

  defp to_map!(other, what),
    do: raise(ArgumentError, "#{what}: must be a map or a keyword list, got: #{inspect(other)}")

  defp timeout!(:infinity), do: :infinity
  defp timeout!(t) when is_integer(t) and t >= 0, do: t

  defp timeout!(t),
    do:
      raise(
        ArgumentError,
        "timeout: must be a non-negative integer or :infinity, got: #{inspect(t)}"
      )
end
