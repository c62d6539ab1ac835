# The erlang_python demo in Elixir: a tour of the Python module, printing
# each call and what it returned.  Run from the repository's root with
#
#     mix run examples/demo.exs
#
# (mix compiles src/, lib/ and the NIF first and starts the application).

defmodule Demo.Show do
  @moduledoc false
  def section(title), do: IO.puts("\n== #{title}")

  # Prints the code of a call, runs it and prints its result.
  defmacro show(expr) do
    code =
      expr |> Macro.to_string() |> Code.format_string!(line_length: 100) |> IO.iodata_to_binary()

    quote do
      IO.puts(unquote(code))
      IO.puts(Demo.Show.result(unquote(expr)))
    end
  end

  def result(value) do
    text = inspect(value, pretty: true, width: 74)
    "  #=> " <> String.replace(text, "\n", "\n      ")
  end
end

defmodule Demo do
  @moduledoc false
  import Demo.Show

  def run do
    {:ok, _} = Application.ensure_all_started(:erlang_python)
    IO.puts("erlang_python demo (Elixir) - embedded Python #{hd(String.split(Python.version()))}")

    section("Call a function: Python.call(module, function, args, opts)")
    show(Python.call(:math, :sqrt, [16]))
    show(Python.call(:"os.path", :join, ["/usr", "lib"]))

    show(Python.call(:json, :dumps, [%{"b" => 1, "a" => [1, 2.5, nil]}], kwargs: [sort_keys: true]))

    show(Python.call!(:math, :pow, [2, 10]))

    section("Evaluate an expression, with locals")
    show(Python.eval("2 ** 100"))
    show(Python.eval("[x * y for y in range(4)]", %{x: 10}))
    show(Python.eval("sum(xs) / len(xs)", locals: [xs: [1, 2, 3, 4]], timeout: 1_000))

    section("Generators drained to a list: Python.stream/4")
    show(Python.stream(:itertools, :repeat, ["ab"], kwargs: [times: 3]))

    section("Context affinity: Python.bind/0 keeps Python state (and its thread) across calls")
    show(Python.bind())
    show(Python.exec("counter = 0"))
    show(Python.exec("counter += 1"))
    show(Python.eval("counter"))
    show(Python.exec("def greet(name):\n    return 'hello ' + name"))
    show(Python.call(:__main__, :greet, ["elixir"]))
    show(Python.exec("import sqlite3\nconn = sqlite3.connect(':memory:')"))
    show(Python.exec("conn.execute('CREATE TABLE t (v)')"))
    show(Python.exec("conn.execute('INSERT INTO t VALUES (?)', (v,))", %{v: 42}))
    show(Python.eval("conn.execute('SELECT v FROM t').fetchall()"))
    show(Python.unbind())

    section("Scoped: Python.with_context/1 (fun/0 binds the process, fun/1 gets a context)")

    show(
      Python.with_context(fn ->
        :ok = Python.exec("y = 21")
        Python.eval("y * 2")
      end)
    )

    show(
      Python.with_context(fn ctx ->
        Python.Context.eval(ctx, "__import__('json').dumps([1, 2])")
      end)
    )

    section("Explicit contexts: two isolated namespaces")
    {:ok, ctx1} = Python.Context.new()
    {:ok, ctx2} = Python.Context.new()
    show(Python.Context.exec(ctx1, "x = 'one'"))
    show(Python.Context.exec(ctx2, "x = 'two'"))
    show({Python.Context.eval(ctx1, "x"), Python.Context.eval(ctx2, "x")})
    show(Python.Context.release(ctx1))
    show(Python.Context.eval(ctx1, "x"))
    show(Python.Context.release(ctx2))

    section("Errors: {:error, %Python.Error{}} or, from the bang functions, raised")
    show(Python.eval("1 / 0"))
    show(Python.call(:no_such_module, :f))
    show(Python.exec("while True: pass", timeout: 100))

    try do
      Python.exec!("def inner():\n    raise ValueError('bad value')\ninner()")
    rescue
      e in Python.Error ->
        IO.puts("rescued Python.Error (type #{inspect(e.type)}):\n" <> Exception.message(e))
    end

    section("Python calling Elixir, and the shared state")
    show(Python.register_function(:elixir_upcase, fn [s] -> String.upcase(s) end))
    show(Python.eval("__import__('erlang').elixir_upcase('shout')"))
    show(Python.State.put(:visits, 1))
    show(Python.eval("__import__('erlang').state_incr('visits', 41)"))
    show(Python.State.get(:visits))
  end
end

Demo.run()
