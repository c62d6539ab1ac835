defmodule PythonTest do
  # The core calls of the Python module: results, options, errors.
  use ExUnit.Case, async: false
  import PythonTest.Helpers

  doctest Python
  doctest Python.Error

  setup do
    pool_idle!()
    on_exit(&Python.unbind/0)
  end

  describe "call/4" do
    test "calls a function with positional arguments" do
      assert Python.call(:math, :sqrt, [16]) == {:ok, 4.0}
      assert Python.call(:math, :pow, [2, 10]) == {:ok, 1024.0}
      assert Python.call(:builtins, :len, ["héllo"]) == {:ok, 5}
    end

    test "args default to []" do
      assert {:ok, cwd} = Python.call(:os, :getcwd)
      assert cwd == File.cwd!()
    end

    test "dotted module names, as atoms or strings" do
      assert Python.call(:"os.path", :join, ["/usr", "lib"]) == {:ok, "/usr/lib"}
      assert Python.call("os.path", "basename", ["/a/b.txt"]) == {:ok, "b.txt"}
    end

    test "kwargs: as a keyword list or a map" do
      assert Python.call(:json, :dumps, [%{"b" => 1, "a" => [1, 2.5, nil]}],
               kwargs: [sort_keys: true]
             ) ==
               {:ok, ~s({"a": [1, 2.5, null], "b": 1})}

      assert Python.call(:builtins, :int, ["ff"], kwargs: %{base: 16}) == {:ok, 255}
      assert Python.call(:builtins, :int, ["ff"], kwargs: %{"base" => 16}) == {:ok, 255}
    end

    test "values convert both ways" do
      assert {:ok,
              ["int", "float", "bool", "NoneType", "str", "str", "list", "tuple", "dict", "bytes"]} =
               Python.eval("[type(v).__name__ for v in x]", %{
                 x: [1, 2.5, true, nil, :atom, "text", [1], {1, 2}, %{a: 1}, {:bytes, "raw"}]
               })

      assert Python.eval("None") == {:ok, :none}
      assert Python.eval("{'k': (1, [2.0, 'three'])}") == {:ok, %{"k" => {1, [2.0, "three"]}}}
      assert Python.eval("2 ** 100") == {:ok, 1_267_650_600_228_229_401_496_703_205_376}
      assert Python.eval("x", %{x: self()}) == {:ok, self()}
    end

    test "a Python exception is a Python.Error with type, message and traceback" do
      assert {:error, %Python.Error{} = e} = Python.call(:no_such_module_xyz, :f, [])
      assert e.type == :ModuleNotFoundError
      assert e.message == "No module named 'no_such_module_xyz'"
      assert e.reason == {:ModuleNotFoundError, "No module named 'no_such_module_xyz'"}
      assert e.traceback =~ "ModuleNotFoundError: No module named 'no_such_module_xyz'"

      assert {:error, %Python.Error{type: :ValueError, message: "math domain error"}} =
               Python.call(:math, :sqrt, [-1])
    end

    test "call! returns the value or raises Python.Error" do
      assert Python.call!(:math, :sqrt, [16]) == 4.0
      assert Python.call!(:builtins, :sorted, [[3, 1, 2]], kwargs: [reverse: true]) == [3, 2, 1]

      error = assert_raise Python.Error, fn -> Python.call!(:math, :sqrt, [-1]) end
      assert error.type == :ValueError
      assert Exception.message(error) =~ "ValueError: math domain error"
      assert Exception.message(error) =~ "Python traceback:"
    end

    test "timeout: interrupts the Python code; the next call works" do
      assert {:error, %Python.Error{reason: :timeout, type: nil} = e} =
               Python.call(:time, :sleep, [0.5], timeout: 50)

      assert e.message =~ "timeout"
      assert Python.call(:math, :sqrt, [4], timeout: :infinity) == {:ok, 2.0}

      assert_raise Python.Error, ~r/^timeout/, fn ->
        Python.call!(:time, :sleep, [0.5], timeout: 50)
      end
    end

    test "arguments py refuses come back as {:badarg, what}" do
      assert {:error, %Python.Error{reason: {:badarg, :args}, type: nil}} =
               Python.call(:math, :sqrt, 16)

      assert {:error, %Python.Error{reason: {:badarg, :module}}} = Python.call(42, :f, [])
    end

    test "invalid options raise ArgumentError" do
      assert_raise ArgumentError, ~r/unknown option\(s\) \[:timout\]/, fn ->
        Python.call(:math, :sqrt, [4], timout: 10)
      end

      assert_raise ArgumentError, ~r/timeout/, fn -> Python.call(:math, :sqrt, [4], timeout: -1) end
      assert_raise ArgumentError, ~r/kwargs/, fn -> Python.call(:math, :sqrt, [4], kwargs: 1) end
      assert_raise ArgumentError, ~r/keyword list/, fn -> Python.call(:math, :sqrt, [4], %{}) end

      assert_raise ArgumentError, ~r/context/, fn ->
        Python.call(:math, :sqrt, [4], context: :nope)
      end
    end
  end

  describe "eval/3" do
    test "evaluates an expression" do
      assert Python.eval("[x * 2 for x in range(4)]") == {:ok, [0, 2, 4, 6]}
      assert Python.eval(["1 +", " 2"]) == {:ok, 3}
    end

    test "locals as a map, or as the locals: option (map or keyword list)" do
      assert Python.eval("[x * y for y in range(4)]", %{x: 10}) == {:ok, [0, 10, 20, 30]}
      assert Python.eval("a + b", %{"a" => 1, "b" => 2}) == {:ok, 3}
      assert Python.eval("a + b", locals: [a: 1, b: 2]) == {:ok, 3}
      assert Python.eval("a + b", locals: %{a: 1, b: 2}, timeout: 1000) == {:ok, 3}
      assert Python.eval("a + b", %{a: 1}, locals: [b: 2], timeout: 1000) == {:ok, 3}
    end

    test "locals are visible for that call only" do
      Python.with_context(fn ->
        assert Python.eval("only_here", %{only_here: 1}) == {:ok, 1}
        assert {:error, %Python.Error{type: :NameError}} = Python.eval("only_here")
      end)
    end

    test "errors" do
      assert {:error,
              %Python.Error{type: :NameError, message: "name 'undefined_name' is not defined"}} =
               Python.eval("undefined_name")

      assert {:error, %Python.Error{type: :ZeroDivisionError, message: "division by zero"} = e} =
               Python.eval("1 / 0")

      assert e.traceback =~ "ZeroDivisionError: division by zero"
      assert {:error, %Python.Error{type: :SyntaxError}} = Python.eval("1 +")
      assert {:error, %Python.Error{reason: {:badarg, :code}}} = Python.eval(42)

      assert {:error, %Python.Error{reason: :timeout}} =
               Python.eval("[i for i in iter(int, 1)]", timeout: 50)
    end

    test "a keyword list given as locals is taken as options" do
      assert_raise ArgumentError, ~r/unknown option\(s\) \[:x\]/, fn -> Python.eval("x", x: 1) end

      assert_raise ArgumentError, ~r/locals must be a map/, fn ->
        Python.eval("x", [x: 1], timeout: 5)
      end
    end

    test "eval! returns the value or raises" do
      assert Python.eval!("2 ** 10") == 1024
      assert Python.eval!("x + 1", %{x: 1}) == 2
      assert Python.eval!("x + 1", locals: [x: 1]) == 2

      assert_raise Python.Error, ~r/^ZeroDivisionError: division by zero/, fn ->
        Python.eval!("1 / 0")
      end
    end
  end

  describe "exec/3" do
    test "runs statements; on a bound worker their names stay" do
      Python.with_context(fn ->
        assert Python.exec("import json\nvalue = json.dumps({'a': 1})") == :ok
        assert Python.eval("value") == {:ok, ~s({"a": 1})}
        assert Python.exec("value = value + suffix", %{suffix: "!"}) == :ok
        assert Python.exec("value = value + suffix", locals: [suffix: "?"], timeout: 1000) == :ok
        assert Python.eval("value") == {:ok, ~s({"a": 1}!?)}
        # suffix was a local of those calls only
        assert Python.eval("'suffix' in globals()") == {:ok, false}
      end)
    end

    test "errors" do
      assert {:error, %Python.Error{type: :SyntaxError}} = Python.exec("def f(:")

      assert {:error, %Python.Error{type: :ValueError, message: "bad value"} = e} =
               Python.exec("def inner():\n    raise ValueError('bad value')\ninner()")

      assert e.traceback =~ ~s(line 2, in inner)

      assert {:error, %Python.Error{type: :SystemExit, message: "3"}} =
               Python.exec("import sys; sys.exit(3)")

      assert {:error, %Python.Error{reason: :timeout}} =
               Python.exec("while True: pass", %{}, timeout: 100)

      assert Python.eval("1 + 1") == {:ok, 2}
    end

    test "exceptions defined in Python code" do
      assert {:error, %Python.Error{type: type, message: "custom"}} =
               Python.exec(
                 "class MyElixirTestError(Exception): pass\nraise MyElixirTestError('custom')"
               )

      assert type in [:MyElixirTestError, "MyElixirTestError"]
    end

    test "exec! returns :ok or raises" do
      assert Python.exec!("x = 1") == :ok
      assert_raise Python.Error, ~r/^KeyError/, fn -> Python.exec!("{}['missing']") end
    end
  end

  describe "stream/4" do
    test "drains a generator or iterable into a list" do
      assert Python.stream(:builtins, :range, [0, 10, 3]) == {:ok, [0, 3, 6, 9]}
      assert Python.stream(:itertools, :repeat, ["x"], kwargs: [times: 3]) == {:ok, ["x", "x", "x"]}
      assert Python.stream!(:builtins, :reversed, [[1, 2, 3]]) == [3, 2, 1]
    end

    test "a generator function defined by exec, on a bound worker" do
      Python.with_context(fn ->
        :ok = Python.exec("def countdown(n):\n    while n > 0:\n        yield n\n        n -= 1")
        assert Python.stream(:__main__, :countdown, [3]) == {:ok, [3, 2, 1]}
      end)
    end

    test "errors and options" do
      assert {:error, %Python.Error{type: :TypeError}} = Python.stream(:builtins, :iter, [42])
      assert_raise Python.Error, ~r/TypeError/, fn -> Python.stream!(:builtins, :iter, [42]) end

      assert_raise ArgumentError, ~r/unknown option/, fn ->
        Python.stream(:builtins, :range, [3], timeout: 5)
      end
    end
  end

  test "version/0 is sys.version" do
    version = Python.version()
    assert is_binary(version)
    assert Python.eval!("__import__('sys').version") == version
    assert version =~ ~r/^3\.\d+/
  end

  describe "Python.Error" do
    test "from_reason/1 on the reasons py returns" do
      assert {:error, reason} = :py.eval("1 / 0")
      e = Python.Error.from_reason(reason)
      assert %Python.Error{type: :ZeroDivisionError, message: "division by zero"} = e
      assert e.traceback =~ "Traceback (most recent call last)"

      for reason <- [
            :timeout,
            :no_workers_available,
            :worker_crashed,
            :not_running,
            :context_not_bound,
            {:badarg, :kwargs},
            {:overloaded, 5, 5}
          ] do
        e = Python.Error.from_reason(reason)
        assert %Python.Error{type: nil, traceback: nil, reason: ^reason} = e
        assert is_binary(e.message) and e.message != ""
        assert Exception.message(e) == e.message
      end

      assert Exception.message(Python.Error.from_reason({:overloaded, 3, 4})) =~ "3 of 4"
      assert Exception.message(Python.Error.from_reason({:badarg, :kwargs})) =~ ":kwargs"
    end

    test "raise with a message or fields" do
      assert_raise Python.Error, "plain", fn -> raise Python.Error, "plain" end

      assert_raise Python.Error, "NameError: x", fn ->
        raise Python.Error, type: :NameError, message: "x"
      end
    end
  end

  describe "register_function" do
    test "Python calls an Elixir function" do
      :ok = Python.register_function(:elixir_add, fn [a, b] -> a + b end)
      assert Python.eval("__import__('erlang').elixir_add(1, 2)") == {:ok, 3}
      assert Python.eval("__import__('erlang').call('elixir_add', 40, 2)") == {:ok, 42}
      :ok = Python.register_function("elixir_shout", __MODULE__, :shout)
      assert Python.eval("__import__('erlang').elixir_shout('abc', 'de')") == {:ok, "ABC DE"}

      :ok = Python.unregister_function(:elixir_add)
      :ok = Python.unregister_function("elixir_shout")

      assert {:error, %Python.Error{type: :NameError}} =
               Python.eval("__import__('erlang').elixir_add(1, 2)")
    end

    test "an Elixir function that raises is an erlang.ErlangError in Python" do
      :ok = Python.register_function(:elixir_fail, fn _ -> raise "boom" end)

      assert {:error, %Python.Error{type: :ErlangError, message: message}} =
               Python.eval("__import__('erlang').elixir_fail()")

      assert message =~ "RuntimeError"
      :ok = Python.unregister_function(:elixir_fail)
    end
  end

  # A callback registered as module and function: gets the argument list.
  def shout(args), do: args |> Enum.map(&String.upcase/1) |> Enum.join(" ")
end
